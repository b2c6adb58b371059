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

import asyncio
import concurrent.futures
import inspect
import random as random_module
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from .._crashpoints import reached
from ..errors import (
    ActorError,
    ChildCancelled,
    FencedError,
    InvalidInputError,
    PromiseNotFoundError,
    StepTimedOutError,
)
from ..store import Promise, PromiseKind, PromiseState, decode, encode, error_info, rebuild_error
from ..store._actors import Fence, spawn_op, watch_op
from ..store._promises import promise_from_row
from ..store._steps import journal_query, now_step_op, promise_step_op, send_op, step_op
from ..store._validate import MAX_ACTOR_ID_LENGTH, Timeout, check_id, timeout_parts
from ._actor import check_state
from ._cancel import Cancelled, CancelState, EndOfJournal
from ._journal import Journal, callable_name, fingerprint
from ._messages import encode_message, message_tags, start_message, type_name
from ._outcome import result_of
from ._retry import NO_RETRY, RetryPolicy
from ._signals import Suspend, Terminated
from ._spec import ChildSpec, Exit
from ._steps import (
    StepCall,
    StepInfo,
    StepOutcome,
    _current_step,
    _from_step,
    _PlannedStep,
    _return_type,
    _with_step,
)

if TYPE_CHECKING:
    from ._activation import Activation
    from ._actor import DurableActor
    from ._ref import ActorRef

T = TypeVar("T")

__all__ = ["Context", "DurablePromise"]


class DurablePromise:
    """A promise a handler started (a call, an external promise, a timer) and may wait on.

    ``result`` returns its value or raises its error, waiting if it is still pending.
    """

    __slots__ = ("id", "_ctx", "_record", "_target")

    def __init__(
        self, ctx: Context, id: str, record: Promise | None, target: str | None = None
    ) -> None:
        self.id = id
        self._ctx = ctx
        self._record = record
        self._target = target

    def result(self, type: Any = Any) -> Any:
        """The value decoded as ``type``; raises the rejection's error. Waits if pending."""
        record = self._ctx._await([self], wait_all=False)[self.id]
        return self._ctx._result(record, type, self._target)

    def done(self) -> bool:
        """Whether it is settled, as far as this handler run knows."""
        return self._record is not None and self._record.state.settled

    def __repr__(self) -> str:
        state = self._record.state.value if self._record is not None else "?"
        return f"DurablePromise({self.id!r}, {state})"


class Context:
    """The durable operations of one handler run (see the module docstring).

    Attributes:
        actor_id: the id of the actor handling the message.
        message_id: the id of the message being handled.
        message: the message promise as it was loaded.

    """

    def __init__(
        self,
        activation: Activation,
        message: Promise,
        journal: Journal,
        cancel: CancelState | None = None,
    ) -> None:
        self._activation = activation
        self._host = activation.host
        self._store = activation.store
        assert activation.fence is not None
        self._fence: Fence = activation.fence
        self.actor_id = activation.actor_id
        self.message = message
        self.message_id = message.id
        self._journal = journal
        self._cancel = cancel or CancelState(message.id, self._store, self._host.cleanup_timeout)
        self._rng: random_module.Random | None = None
        self.exit: tuple[Exit, str | None] | None = None

    def replay_of(self, message_id: str) -> Context:
        """A read-only context over another message's journal (of this actor or another).

        Running a handler's code with it replays that message's kept operations and raises
        ``EndOfJournal`` at the first one the journal does not hold; it writes nothing. Used to
        rebuild where an ended message got to (``AgentRun.resume``).
        """
        query, params = journal_query(message_id, "", 0)
        rows = self._store.read(lambda conn: conn.execute(query, params).fetchall())
        records = [promise_from_row(r) for r in rows]
        message = next((r for r in records if r.id == message_id), None)
        if message is None:
            raise PromiseNotFoundError(f"no promise has the id {message_id!r}", message_id)
        cancel = CancelState(message_id, self._store, 0.0)
        cancel.dry = True
        steps = [r for r in records if r.id != message_id]
        return Context(self._activation, message, Journal(message_id, steps), cancel)

    @property
    def actor(self) -> DurableActor[Any]:
        """The actor instance handling the message."""
        return self._activation.actor

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
        deadline, if nearer, wins): an async function is cancelled at it, a sync one's result
        arriving late counts as a failed attempt; a final timeout is kept as
        ``rejected_timedout``.

        Raises:
            NondeterminismError: a replay finds a different step kept at this position.
            BaseException: the step's final error, rebuilt from its record.

        """
        result: T = self._plan_step(fn, args, kwargs, name, retry, returns, timeout).run()
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
            self._plan_step(c.fn, c.args, c.kwargs, c.name, c.retry, c.returns, c.timeout)
            for c in calls
        ]
        if len(planned) <= 1 or max_concurrency <= 1:
            outcomes = [p.outcome() for p in planned]
        else:
            self._hold_places(planned)
            outcomes = list(self._host.parallel.map(lambda p: p.outcome(), planned))
        if signals:
            self.raise_signals(outcomes)
        return outcomes

    def raise_signals(self, outcomes: Sequence[StepOutcome]) -> None:
        """Raise what must end the handler rather than be a step's result: a cancellation,
        a fenced-off activation, or a suspension (all waits of the steps together).
        """
        for o in outcomes:
            if isinstance(o.error, Cancelled | FencedError):
                raise o.error
        suspends = [o.error for o in outcomes if isinstance(o.error, Suspend)]
        if suspends:
            awaiting = [id for s in suspends for id in s.awaiting]
            raise Suspend(awaiting, wait_all=False)

    def _hold_places(self, planned: list[_PlannedStep]) -> None:
        # Steps that run together finish in any order, and a step's row is written when it
        # finishes. Writing a pending row for each first (one group commit) keeps their rows
        # in call order (``ORDER BY seq``) and lets a replay see they had started.
        fresh = [p for p in planned if p.record is None]
        if len(fresh) < 2:
            return
        self._cancel.gate(fresh[0].sid)
        futures = [
            self._store.submit(
                step_op(
                    p.sid,
                    self._fence,
                    state=PromiseState.PENDING,
                    value=None,
                    fingerprint=p.fp,
                    attempt=0,
                )
            )
            for p in fresh
        ]
        for p, future in zip(fresh, futures, strict=True):
            p.record = future.result()
            self._journal.keep(p.record)

    def _plan_step(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        retry: RetryPolicy | None,
        returns: Any,
        timeout: float | None = None,
    ) -> _PlannedStep:
        label = name or callable_name(fn)
        fp = fingerprint("step", label, [list(args), kwargs] if kwargs else list(args))
        rtype = returns if returns is not None else _return_type(fn)
        sid, record = self._journal.attempt(self._journal.next(), fp)
        policy = retry or NO_RETRY
        return _PlannedStep(self, sid, label, fp, fn, args, kwargs, policy, rtype, record, timeout)

    def _invoke(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
        timeout: float | None = None,
    ) -> Any:
        own = timeout
        timeout = self._nearest(timeout)
        try:
            return self._call(fn, args, kwargs, info, own, timeout)
        except StepTimedOutError:
            if timeout is not None and (own is None or timeout < own):
                # The message's deadline, not the step's own, cut it: the handler is out of
                # time (a cancel), and the step's attempt is not a failure to retry or keep.
                self._cancel.request()
                self._cancel.deadline = True
                self._cancel.reason = f"the deadline of {self.message_id} passed"
                self._cancel.gate(info.id)
                raise Cancelled(self._cancel.reason, deadline=True) from None
            raise

    def _call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
        own: float | None,
        timeout: float | None,
    ) -> Any:
        started = time.monotonic()
        token = _current_step.set(info)
        try:
            if inspect.iscoroutinefunction(fn):
                result = self._run_async(fn(*args, **kwargs), info, timeout)
            else:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = self._run_async(result, info, timeout)
        finally:
            _current_step.reset(token)
        elapsed = time.monotonic() - started
        if own is not None and elapsed > own:
            # A sync function cannot be interrupted: a late result counts as a timeout.
            raise StepTimedOutError(f"step {info.id} took longer than {own:.3f} s", info.id)
        if timeout is not None and elapsed > timeout:
            # It outlived its message's deadline: its result is kept, but the handler's next
            # durable operation sees the deadline (as for a cancel).
            self._cancel.request()
            self._cancel.deadline = True
            self._cancel.reason = f"the deadline of {self.message_id} passed"
        return result

    def _run_async(self, awaitable: Any, info: StepInfo, timeout: float | None) -> Any:
        future = self._host.start_coroutine(_with_step(info, awaitable, timeout))
        self._cancel.track(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # Cancelled because the message was: nothing is kept for this step.
            self._cancel.gate(info.id)
            raise Cancelled(self._cancel.reason, self._cancel.deadline) from None
        except TimeoutError as exc:
            if timeout is not None and isinstance(exc, asyncio.TimeoutError | TimeoutError):
                raise StepTimedOutError(
                    f"step {info.id} took longer than {timeout:.3f} s", info.id
                ) from exc
            raise
        finally:
            self._cancel.untrack(future)

    def _nearest(self, timeout: float | None) -> float | None:
        """The step's timeout, or less if the message's deadline comes first."""
        deadline = self.message.timeout_at
        if deadline is None:
            return timeout
        left = max(0.001, (deadline - datetime.now(UTC)).total_seconds())
        return left if timeout is None else min(timeout, left)

    def _keep_step(
        self,
        sid: str,
        state: PromiseState,
        value: str | None,
        fp: str,
        attempt: int,
        next_attempt_at: datetime | None = None,
        first: bool = False,
    ) -> Promise:
        op = step_op(
            sid,
            self._fence,
            state=state,
            value=value,
            fingerprint=fp,
            attempt=attempt,
            next_attempt_at=next_attempt_at,
            first=first,
        )
        record: Promise = self._store.execute(op)
        self._journal.keep(record)
        reached("step.kept", sid)
        return record

    def _step_value(self, record: Promise, rtype: Any) -> Any:
        if record.state is PromiseState.RESOLVED:
            return decode(record.value, rtype)
        info = record.error()
        if info is None:
            raise ActorError(f"step {record.id} is {record.state.value} with no error recorded")
        raise _from_step(rebuild_error(info), record.id)

    def _wait_for_retry(self, sid: str, attempt: int, next_at: datetime | None) -> None:
        if self._cancel.dry:
            raise EndOfJournal(sid)
        if next_at is None:
            return
        remaining = (next_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return
        if remaining <= max(self._host.suspend_after, 0.0):
            if self._cancel.requested.wait(remaining):
                self._cancel.gate(sid)
            return
        # A long backoff costs a timer row, not a thread: wait on a timer under the step.
        timer_id = f"{sid}/retry-{attempt}"
        timer = self._store.execute(
            promise_step_op(timer_id, self._fence, kind="timer", fingerprint="retry", at=next_at)
        )
        self._await([DurablePromise(self, timer_id, timer)], wait_all=False)

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
        record = self._journal.lookup(sid, "sleep")
        if record is None:
            self._cancel.gate(sid)
            record = self._store.execute(
                promise_step_op(
                    sid, self._fence, kind="timer", fingerprint="sleep", secs=secs, at=at
                )
            )
            self._journal.keep(record)
        settled = self._await([DurablePromise(self, sid, record)], wait_all=False)[sid]
        if settled.state is not PromiseState.RESOLVED:
            self._cut_off(settled)

    def _cut_off(self, record: Promise) -> None:
        """A promise this handler waited on was canceled or timed out: if that is because the
        handler's own message was (the cancel reaches everything under it), it is a
        ``Cancelled`` for the handler, not an error of that promise.
        """
        if record.state not in (PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT):
            return
        if not self._cancel.requested.is_set():
            own = self._store.find(self.message_id)
            if own is None or not own.state.settled:
                return
            self._cancel.request()
        if self._cancel.cleanup_until is None:
            self._cancel.gate(record.id)

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
            record = self._journal.lookup(sid, "promise")
            if record is None:
                self._cancel.gate(sid)
                record = self._store.execute(
                    promise_step_op(
                        sid,
                        self._fence,
                        kind="promise",
                        fingerprint="promise",
                        param=param_json,
                        tags=tag_json,
                        secs=secs,
                        at=at,
                    )
                )
                self._journal.keep(record)
            return DurablePromise(self, sid, record)
        check_id(id)
        fp = f"promise:{id}"
        kept = self._journal.lookup(sid, fp)
        if kept is not None:
            return DurablePromise(self, id, None)
        self._cancel.gate(sid)
        outcome = self._store.create(id, param=param, timeout=timeout, tags=tags)
        self._keep_step(sid, PromiseState.RESOLVED, encode({"promise": id}), fp, 1)
        return DurablePromise(self, id, outcome.promise)

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
        this actor that its supervisor gave up is raised as ``ChildFailed``.
        """
        return self.start_call(target, msg, timeout=timeout).result(returns)

    def start_call(
        self, target: ActorRef | str, msg: Any, *, timeout: Timeout = None
    ) -> DurablePromise:
        """Send ``msg`` to ``target`` as a step; return the pending reply, to wait on later.

        Start several and ``gather`` them to fan out.
        """
        target_id = target if isinstance(target, str) else target.id
        sid = self._send(target_id, msg, timeout, "call")
        return DurablePromise(self, sid, self._journal.get(sid), target_id)

    def send(self, target: ActorRef | str, msg: Any, *, timeout: Timeout = None) -> str:
        """Tell ``target`` as a step; return the message id. A replay does not send again."""
        target_id = target if isinstance(target, str) else target.id
        return self._send(target_id, msg, timeout, "send")

    def _send(self, target_id: str, msg: Any, timeout: Timeout, kind: str) -> str:
        sid = self._journal.next()
        fp = fingerprint(kind, f"{target_id}:{type_name(msg)}", msg)
        record = self._journal.lookup(sid, fp)
        if record is not None:
            if record.kind is PromiseKind.STEP and record.state.rejected:
                raise self._step_value(record, Any)
            return sid
        self._cancel.gate(sid)
        param = encode_message(msg)
        tags = encode(message_tags(msg), what="tags")
        secs, at = timeout_parts(timeout)
        op = send_op(
            sid, target_id, param=param, tags=tags, secs=secs, at=at, fence=self._fence, fp=fp
        )
        try:
            outcome = self._store.execute(op)
        except ActorError as exc:
            # Keep the failure, so a replay raises it too even if the target exists by then.
            info = error_info(exc)
            self._keep_step(sid, PromiseState.REJECTED, encode(info), fp, 1)
            raise
        record = outcome.promise
        self._journal.keep(record)
        reached("message.committed", sid)
        if outcome.applied:
            self._host.deliver(target_id, record)
        return sid

    def gather(self, *promises: DurablePromise, returns: Any = Any) -> list[Any]:
        """Wait for all ``promises`` and return their values in order (fan-in).

        Raises the error of the first one (in argument order) that was rejected.
        """
        records = self._await(list(promises), wait_all=True)
        for p in promises:
            record = records.get(p.id)
            if record is not None and record.state.rejected:
                self._result(record, returns, p._target)  # raises
        return [self._result(records[p.id], returns, p._target) for p in promises]

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
        raises ``ChildFailed`` here.
        """
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        check_state(actor_class, state)
        kind = actor_class.kind()
        sid = self._journal.next()
        fp = f"spawn:{kind}:{id}"
        if self._journal.lookup(sid, fp) is None:
            self._cancel.gate(sid)
            step = step_op(
                sid,
                self._fence,
                state=PromiseState.RESOLVED,
                value=encode({"actor": id}),
                fingerprint=fp,
            )
            _, _, kept = self._store.execute(
                spawn_op(
                    id,
                    parent=self.actor_id,
                    kind=kind,
                    spec=encode(spec or ChildSpec(), what="child spec"),
                    state=encode(state, what="state") if state is not None else None,
                    fence=self._fence,
                    step=step,
                    start=start_message(actor_class),
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
        fp = f"watch:{target_id}"
        if self._journal.lookup(sid, fp) is not None:
            return
        self._cancel.gate(sid)
        status = self._store.execute(watch_op(target_id, self.actor_id))
        self._keep_step(sid, PromiseState.RESOLVED, encode({"watching": target_id}), fp, 1)
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
        record = self._journal.lookup(sid, "now")
        if record is None:
            self._cancel.gate(sid)
            record = self._store.execute(now_step_op(sid, self._fence, "now"))
            self._journal.keep(record)
        value: datetime = decode(record.value, datetime)
        return value

    def random(self) -> float:
        """A random float in ``[0, 1)``; the same sequence on every replay of this message."""
        if self._rng is None:
            self._rng = random_module.Random(self.message_id)
        return self._rng.random()

    # -- waiting ---------------------------------------------------------------------------

    def _await(self, promises: list[DurablePromise], *, wait_all: bool) -> dict[str, Promise]:
        known: dict[str, Promise] = {}
        for p in promises:
            if p._record is not None and p._record.state.settled:
                known[p.id] = p._record
        if _satisfied(known, promises, wait_all):
            return known
        pending = [p.id for p in promises if p.id not in known]
        known.update(self._refresh(pending))
        if _satisfied(known, promises, wait_all):
            return known
        self._cancel.gate(promises[0].id)
        grace = self._host.suspend_after
        if grace > 0 and not _due_after(promises, known, grace, wait_all):
            deadline = time.monotonic() + grace
            woken = threading.Event()
            pending = [p.id for p in promises if p.id not in known]
            sub = self._store.subscribe(
                "settled", [*pending, self.message_id], lambda k, key, r: woken.set()
            )
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    woken.wait(left)
                    woken.clear()
                    if self._cancel.requested.is_set():
                        self._cancel.gate(promises[0].id)
                    known.update(self._refresh([p.id for p in promises if p.id not in known]))
                    if _satisfied(known, promises, wait_all):
                        return known
            finally:
                sub.cancel()
        raise Suspend([p.id for p in promises if p.id not in known], wait_all)

    def _refresh(self, ids: list[str]) -> dict[str, Promise]:
        if not ids:
            return {}
        found = self._store.get_many(ids)
        return {id: p for id, p in found.items() if p.state.settled}

    def _result(self, record: Promise, type: Any, target: str | None) -> Any:
        if record.kind is PromiseKind.TIMER and record.state is PromiseState.RESOLVED:
            return None
        self._cut_off(record)
        if (
            target is not None
            and record.state in (PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT)
            and self._is_child(target)
        ):
            how = "canceled" if record.state is PromiseState.REJECTED_CANCELED else "timed out"
            raise ChildCancelled(f"child {target!r} was {how} ({record.id})", target)
        return result_of(record, type, is_child=self._is_child if target else None)

    def _is_child(self, actor_id: str) -> bool:
        row = self._store.read(
            lambda conn: conn.execute(
                "SELECT parent FROM actors WHERE id = %s", (actor_id,)
            ).fetchone()
        )
        return row is not None and row[0] == self.actor_id


def _satisfied(
    known: Mapping[str, Promise], promises: Iterable[DurablePromise], wait_all: bool
) -> bool:
    ids = [p.id for p in promises]
    if not wait_all:
        return any(i in known for i in ids)
    if any(known[i].state.rejected for i in ids if i in known):
        return True
    return all(i in known for i in ids)


def _due_after(
    promises: list[DurablePromise], known: dict[str, Promise], grace: float, wait_all: bool
) -> bool:
    """Whether the wait is not expected to end within ``grace`` seconds: it needs a timer
    due later (any, for a wait on all; every one, for a wait on any). A sleep of an hour then
    suspends at once instead of holding its thread for the grace first; should it end sooner
    after all (a cancel, a failure of another awaited promise), the settle wakes the actor as
    it wakes any suspended one. The local clock is good enough for this guess.
    """
    now = datetime.now(UTC)
    far = [
        p._record is not None
        and p._record.kind is PromiseKind.TIMER
        and p._record.timeout_at is not None
        and (p._record.timeout_at - now).total_seconds() > grace
        for p in promises
        if p.id not in known
    ]
    return any(far) if wait_all else bool(far) and all(far)
