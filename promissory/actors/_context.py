"""``Context``: the durable operations a handler has, each a promise under its message's id.

Every operation takes the next position in the handler run, so its id is
``{message id}/{n}``. It first looks in the journal: a kept record is returned (or its error
raised) without running anything; otherwise it runs for real and keeps its outcome before the
handler goes on (write-ahead). Waiting on a promise that is still pending blocks the handler's
thread for at most ``suspend_after`` seconds (not at all for a timer due later than that),
then ends the handler's turn (``Suspend``); when
the promise settles, the message is handled again from the start and every kept operation
returns its record.

Example:
    >>> @handler
    ... def charge(self, ctx: Context, msg: Charge) -> str:
    ...     receipt = ctx.step(payments.charge, msg.order, retry=RetryPolicy(max_attempts=5))
    ...     approval = ctx.promise(timeout=timedelta(days=3))
    ...     ctx.send(self.mailer, Receipt(receipt))
    ...     if approval.result(bool):
    ...         ctx.sleep(timedelta(hours=1))
    ...     return receipt

"""

from __future__ import annotations

import functools
import logging
import random as random_module
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _tracing
from .._crashpoints import reached
from ..errors import (
    ActorError,
    FencedError,
    InvalidInputError,
    PromiseNotFoundError,
)
from ..store import (
    MAX_ACTOR_ID_LENGTH,
    Fence,
    Promise,
    PromiseKind,
    PromiseState,
    Store,
    Timeout,
    check_id,
    decode,
    encode,
    error_info,
    now_step_op,
    promise_step_op,
    send_op,
    spawn_op,
    step_op,
    timeout_parts,
    watch_op,
)
from ._cancel import Canceled, CancelState
from ._engine import Bound, DurablePromise, Handling
from ._handlers import check_state
from ._journal import Journal, StepKind, fingerprint
from ._messages import encode_message, message_tags, start_message, type_name
from ._retry import RetryPolicy
from ._signals import Suspend, Terminated
from ._spec import ChildSpec, Exit
from ._steps import StepCall, StepOutcome
from ._types import check_hostable_name

if TYPE_CHECKING:
    from ._actor import DurableActor
    from ._ref import ActorRef

T = TypeVar("T")

__all__ = ["Context", "DurablePromise"]


log = logging.getLogger("promissory.actors")


class Context:
    """The durable operations of one handler run (see the module docstring).

    Attributes:
        actor_id: the id of the actor handling the message.
        message_id: the id of the message being handled.
        message: the message promise as it was loaded.

    """

    def __init__(
        self,
        activation: Bound,
        message: Promise,
        journal: Journal,
        cancel: CancelState | None = None,
    ) -> None:
        self._run = Handling(activation, message, journal, cancel)
        self._activation = activation
        self._host = activation.host
        self._store = activation.store
        self._fence: Fence = self._run.fence
        self.actor_id = activation.actor_id
        self.message = message
        self.message_id = message.id
        self._journal = journal
        self._cancel = self._run.cancel
        self._rng: random_module.Random | None = None
        self.exit: tuple[Exit, str | None] | None = None

    @property
    def cancel_state(self) -> CancelState:
        """Whether the message was canceled (or timed out), and what that allows."""
        return self._cancel

    def replay_of(self, message_id: str, *, until: int | None = None) -> Context:
        """A read-only context over another message's journal (of this actor or another).

        Running a handler's code with it replays that message's kept operations and raises
        ``EndOfJournal`` at the first one the journal does not hold; it writes nothing. Used to
        rebuild where an ended message got to (``AgentRun.resume``). With ``until``, only the
        steps before that position (1-based) are held, and they are returned as kept whatever
        the code asks now (no non-determinism check): a fork's prefix (``AgentRun.fork``).
        """
        records = self._store.journal(message_id).records
        message = next((r for r in records if r.id == message_id), None)
        if message is None:
            raise PromiseNotFoundError(f"no promise has the id {message_id!r}", message_id)
        cancel = CancelState(message_id, self._store, 0.0)
        cancel.dry = True
        journal = Journal(message_id, [r for r in records if r.id != message_id])
        if until is not None:
            journal = journal.before(until)
        return Context(self._activation, message, journal, cancel)

    @property
    def store(self) -> Store:
        """The store the actor is kept in: for reads, and for announcing what is not kept
        (an agent's streamed text). Writes go through the context's durable operations.
        """
        return self._store

    @property
    def actor(self) -> DurableActor[Any]:
        """The actor instance handling the message."""
        actor: DurableActor[Any] = self._activation.actor
        return actor

    def ref(self, actor_id: str | None = None) -> ActorRef:
        """A ref to ``actor_id`` (default: this actor)."""
        return self._host.ref(actor_id or self.actor_id)

    # -- steps -----------------------------------------------------------------------------

    def step(
        self,
        fn: Callable[..., T],
        *args: Any,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        returns: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once and keep its result (or its final error).

        Async functions run on the runtime's event loop. The result is returned as it decodes
        from the kept JSON (as ``returns``, default ``fn``'s return annotation), so the first
        run and every replay see the same value. ``current_step()`` inside ``fn`` gives the
        step id to use as an idempotency key. ``timeout`` bounds each attempt (the message's
        deadline, if nearer, wins): an async function is canceled at it, a sync one's result
        arriving late counts as a failed attempt; a final timeout is kept as
        ``rejected_timedout``.

        Raises:
            NondeterminismError: a replay finds a different step kept at this position.
            BaseException: the step's final error, rebuilt from its record.

        """
        result: T = self._run.plan_step(fn, args, kwargs, name, retry, returns, timeout).run()
        return result

    def step_many(
        self, calls: Sequence[StepCall], *, max_concurrency: int = 4, signals: bool = True
    ) -> list[StepOutcome]:
        """Run several steps at once (at most ``max_concurrency`` together); keep each.

        Each call gets its position in the order given, so ids and replay do not depend on
        which finishes first. Outcomes come back in the order given; a step's final error is
        its outcome's ``error`` rather than raised. A cancellation, a suspension or a fence
        among them is raised once all have ended (``raise_signals``), unless ``signals`` is
        false: then the caller looks at the outcomes first and calls ``raise_signals`` itself.
        """
        planned = [
            self._run.plan_step(c.fn, c.args, c.kwargs, c.name, c.retry, c.returns, c.timeout)
            for c in calls
        ]
        if len(planned) <= 1 or max_concurrency <= 1:
            outcomes = [p.outcome() for p in planned]
        else:
            self._run.hold_places(planned)
            outcomes = list(self._host.parallel.map(lambda p: p.outcome(), planned))
        if signals:
            self.raise_signals(outcomes)
        return outcomes

    def raise_signals(self, outcomes: Sequence[StepOutcome]) -> None:
        """Raise what must end the handler rather than be a step's result: a cancellation,
        a fenced-off activation, or a suspension (all waits of the steps together).
        """
        for o in outcomes:
            if isinstance(o.error, Canceled | FencedError):
                raise o.error
        suspends = [o.error for o in outcomes if isinstance(o.error, Suspend)]
        if suspends:
            awaiting = [id for s in suspends for id in s.awaiting]
            raise Suspend(awaiting, wait_all=False)

    # -- timers and promises ---------------------------------------------------------------

    def sleep(self, duration: float | timedelta) -> None:
        """Wait ``duration`` durably: a timer row, not a thread, for as long as it takes."""
        if isinstance(duration, datetime):
            raise InvalidInputError("sleep takes a duration; use sleep_until for a datetime")
        secs, _ = timeout_parts(duration)
        self._timer(secs, None)

    def sleep_until(self, when: datetime) -> None:
        """Wait durably until ``when`` (an aware datetime; the database's clock decides)."""
        _, at = timeout_parts(when)
        self._timer(None, at)

    def _timer(self, secs: float | None, at: datetime | None) -> None:
        sid = self._journal.next()
        record = self._journal.lookup(sid, fingerprint(StepKind.SLEEP))
        if record is None:
            self._cancel.gate(sid)
            record = self._run.execute(
                promise_step_op(
                    sid,
                    self._fence,
                    kind=PromiseKind.TIMER,
                    fingerprint=fingerprint(StepKind.SLEEP),
                    secs=secs,
                    at=at,
                )
            )
            self._journal.keep(record)
        timer = DurablePromise(self._run, sid, record)
        with _tracing.waiting(self._run, [timer]):
            settled = self._run.await_all([timer], wait_all=False)[sid]
        if settled.state is not PromiseState.RESOLVED:
            self._run.cut_off(settled)

    def promise(
        self,
        id: str | None = None,
        *,
        timeout: Timeout = None,
        param: Any = None,
        tags: Mapping[str, str] | None = None,
    ) -> DurablePromise:
        """A promise that something outside settles: a person, a webhook, another process.

        With no ``id`` it is the step's own id (``{message id}/{n}``); with an ``id`` that
        promise is created (or found) and the step records which it was. Settle it with
        ``Store.resolve``, ``promissory resolve ID``, or from any process; ``result()`` waits.
        """
        sid = self._journal.next()
        tag_json = encode(dict(tags or {}), what="tags")
        param_json = encode(param, what="param") if param is not None else None
        secs, at = timeout_parts(timeout)
        if id is None:
            record = self._journal.lookup(sid, fingerprint(StepKind.PROMISE))
            if record is None:
                self._cancel.gate(sid)
                record = self._run.execute(
                    promise_step_op(
                        sid,
                        self._fence,
                        kind=PromiseKind.PROMISE,
                        fingerprint=fingerprint(StepKind.PROMISE),
                        param=param_json,
                        tags=tag_json,
                        secs=secs,
                        at=at,
                    )
                )
                self._journal.keep(record)
            return DurablePromise(self._run, sid, record)
        check_id(id)
        fp = fingerprint(StepKind.PROMISE, id)
        kept = self._journal.lookup(sid, fp)
        if kept is not None:
            return DurablePromise(self._run, id, None)
        self._cancel.gate(sid)
        # The promise belongs to this message (this run) whatever its id: a cancel of the
        # run reaches it (unless another run created or waited on it first).
        outcome = self._store.create(
            id, param=param, timeout=timeout, tags=tags, owner=self.message_id
        )
        self._run.keep_step(sid, PromiseState.RESOLVED, encode({"promise": id}), fp, 1)
        return DurablePromise(self._run, id, outcome.promise)

    # -- other actors ----------------------------------------------------------------------

    def call(
        self,
        target: ActorRef | str,
        msg: Any,
        *,
        timeout: Timeout = None,
        returns: Any = Any,
    ) -> Any:
        """Ask ``target`` as a step and wait for the reply (decoded as ``returns``).

        A replay neither sends again nor waits on another message. A failure of a child of
        this actor that its supervisor gave up is raised as ``ChildFailedError``.
        """
        return self.start_call(target, msg, timeout=timeout).result(returns)

    def start_call(
        self, target: ActorRef | str, msg: Any, *, timeout: Timeout = None
    ) -> DurablePromise:
        """Send ``msg`` to ``target`` as a step; return the pending reply, to wait on later.

        Start several and ``gather`` them to fan out.
        """
        target_id = target if isinstance(target, str) else target.id
        sid = self._send(target_id, msg, timeout, StepKind.CALL)
        return DurablePromise(self._run, sid, self._journal.get(sid), target_id)

    def send(self, target: ActorRef | str, msg: Any, *, timeout: Timeout = None) -> str:
        """Tell ``target`` as a step; return the message id. A replay does not send again.

        The message is written with the handler's next durable write (a kept step, a wait,
        its reply: an outbox, so it costs no commit of its own) and handed to ``target``
        then; a handler that waits, or crashes, has it written first. A ``target`` that does
        not exist or has stopped by then does not fail the handler, which has moved on: the
        message is dropped with a warning, and the step kept as rejected (a replay does the
        same). Use ``call`` to learn whether the message was taken.
        """
        target_id = target if isinstance(target, str) else target.id
        return self._send(target_id, msg, timeout, StepKind.SEND)

    def _send(self, target_id: str, msg: Any, timeout: Timeout, kind: StepKind) -> str:
        sid = self._journal.next()
        fp = fingerprint(kind, f"{target_id}:{type_name(msg)}", msg)
        record = self._journal.lookup(sid, fp)
        if record is not None:
            if kind is StepKind.CALL and record.kind is PromiseKind.STEP and record.state.rejected:
                raise self._run.step_value(record, Any)
            return sid  # a send whose target was gone was dropped then, and is now
        self._cancel.gate(sid)
        param = encode_message(msg)
        tags = encode(message_tags(msg), what="tags")
        secs, at = timeout_parts(timeout)
        op = send_op(
            sid,
            target_id,
            param=param,
            tags=tags,
            secs=secs,
            at=at,
            fence=self._fence,
            fp=fp,
            handed=self._host.node_id,  # ``sent`` hands it over, deferred or not
        )
        mark = self._store.mark()
        self._host.sending(target_id)
        if kind is StepKind.SEND:
            self._run.defer(op, functools.partial(self._sent, sid, target_id, fp, mark))
            return sid
        try:
            outcome = self._run.execute(op)
        except BaseException as exc:
            self._host.sent(target_id, None, mark)
            if not isinstance(exc, ActorError):
                raise
            # Keep the failure, so a replay raises it too even if the target exists by then.
            info = error_info(exc)
            self._run.keep_step(sid, PromiseState.REJECTED, encode(info), fp, 1)
            raise
        record = outcome.promise
        self._journal.keep(record)
        try:
            reached("message.committed", sid)
        finally:
            self._host.sent(target_id, outcome, mark)
        return sid

    def _sent(self, sid: str, target_id: str, fp: str, mark: int, outcome: Any) -> None:
        """A deferred ``send`` was written (``outcome``: its ``Sent``) or refused."""
        if isinstance(outcome, BaseException):
            self._host.sent(target_id, None, mark)
            if not isinstance(outcome, ActorError):
                return  # the write failed as a whole: the handler's own write raises it
            log.warning(
                "actor %s: message %s to %s dropped: %s", self.actor_id, sid, target_id, outcome
            )
            # Kept, so the step reads the same on replay (and a person can see why).
            try:
                self._run.keep_step(sid, PromiseState.REJECTED, encode(error_info(outcome)), fp, 1)
            except Exception as exc:
                log.info(
                    "actor %s: the dropped message %s was not kept: %r", self.actor_id, sid, exc
                )
            return
        try:
            self._journal.keep(outcome.promise)
            reached("message.committed", sid)
        finally:
            self._host.sent(target_id, outcome, mark)

    def gather(self, *promises: DurablePromise, returns: Any = Any) -> list[Any]:
        """Wait for all ``promises`` and return their values in order (fan-in).

        Raises the error of the first one (in argument order) that was rejected.
        """
        with _tracing.waiting(self._run, promises):
            records = self._run.await_all(list(promises), wait_all=True)
        for p in promises:
            record = records.get(p.id)
            if record is not None and record.state.rejected:
                self._run.result(record, returns, p._target)  # raises
        return [self._run.result(records[p.id], returns, p._target) for p in promises]

    def spawn(
        self,
        actor_class: type[DurableActor[Any]],
        *,
        id: str,
        state: Any = None,
        spec: ChildSpec | None = None,
    ) -> ActorRef:
        """Create a child actor (once: a replay finds it kept) and return its ref.

        ``spec`` says how its failures are handled: by this actor's supervisor logic when this
        actor is a ``Supervisor``, else by the runtime with the child's own spec (restart type,
        intensity, backoff); a child given up rejects its pending messages, so a ``call`` to it
        raises ``ChildFailedError`` here.
        """
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        check_state(actor_class, state)
        kind = actor_class.kind()
        check_hostable_name(actor_class, kind)
        sid = self._journal.next()
        fp = fingerprint(StepKind.SPAWN, f"{kind}:{id}")
        former = [fingerprint(StepKind.SPAWN, f"{k}:{id}") for k in actor_class.former_kinds]
        if self._journal.lookup(sid, fp, *former) is None:
            self._cancel.gate(sid)
            step = step_op(
                sid,
                self._fence,
                state=PromiseState.RESOLVED,
                value=encode({"actor": id}),
                fingerprint=fp,
            )
            _, _, kept = self._run.execute(
                spawn_op(
                    id,
                    parent=self.actor_id,
                    kind=kind,
                    spec=encode(spec or ChildSpec(), what="child spec"),
                    state=encode(state, what="state") if state is not None else None,
                    fence=self._fence,
                    step=step,
                    start=start_message(actor_class),
                    supervisor=actor_class.supervises,
                    node=self._host.home_for(kind),
                )
            )
            self._journal.keep(kept)
            self._host.spawned(id, kind)
        return self._host.ref(id)

    def watch(self, target: ActorRef | str) -> None:
        """Be sent ``Terminated`` when ``target`` ends for good (at once if it has ended).

        Kept as a step: a replay does not watch twice.
        """
        target_id = target if isinstance(target, str) else target.id
        sid = self._journal.next()
        fp = fingerprint(StepKind.WATCH, target_id)
        if self._journal.lookup(sid, fp) is not None:
            return
        self._cancel.gate(sid)
        status = self._run.execute(watch_op(target_id, self.actor_id))
        self._run.keep_step(sid, PromiseState.RESOLVED, encode({"watching": target_id}), fp, 1)
        if status is None or status[0] not in ("running", "restarting"):
            down = Terminated(actor=target_id, exit=Exit.NORMAL if status else Exit.SHUTDOWN)
            self.send(self.actor_id, down)

    def stop(self, exit: Exit | str = Exit.NORMAL, reason: str | None = None) -> None:
        """End this actor once the current message is done (its reply is still sent).

        Its supervisor sees ``exit`` (``normal`` by default): a transient or temporary child
        that stops normally is not restarted. Pending messages are then rejected.
        """
        self.exit = (Exit(exit), reason)

    # -- determinism -----------------------------------------------------------------------

    def now(self) -> datetime:
        """The database's clock, kept: a replay returns the same time."""
        sid = self._journal.next()
        fp = fingerprint(StepKind.NOW)
        record = self._journal.lookup(sid, fp)
        if record is None:
            self._cancel.gate(sid)
            record = self._run.execute(now_step_op(sid, self._fence, fp))
            self._journal.keep(record)
        value: datetime = decode(record.value, datetime)
        return value

    def random(self) -> float:
        """A random float in ``[0, 1)``; the same sequence on every replay of this message."""
        if self._rng is None:
            self._rng = random_module.Random(self.message_id)
        return self._rng.random()

    # -- waiting ---------------------------------------------------------------------------
