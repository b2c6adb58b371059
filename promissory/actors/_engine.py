"""The machinery of one handler run: steps run and kept, retries, waits, under one journal.

``Handling`` holds what a handler run works with (its message, journal, fence and cancel
state) and does the durable work ``Context`` offers: a step is planned (its id and journal
record fixed), replayed or run attempt after attempt (``PlannedStep``) and kept before the
handler goes on; a wait on pending promises holds the thread for a grace, then suspends.
``Context`` is the handler's face on it; nothing here knows ``Context``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .. import _tracing
from .._crashpoints import reached, step_started
from ..errors import ActorError, ChildCanceledError, StepTimedOutError
from ..store import (
    EventKind,
    Fence,
    Op,
    Promise,
    PromiseKind,
    PromiseState,
    Signal,
    Store,
    bundle,
    decode,
    encode,
    error_info,
    promise_step_op,
    rebuild_error,
    step_op,
)
from ._cancel import Canceled, CancelState, EndOfJournal
from ._hosting import Host
from ._journal import Journal, StepKind, callable_name, fingerprint
from ._outcome import result_of
from ._retry import NO_RETRY, RetryPolicy
from ._signals import Suspend, wait_is_over
from ._steps import (
    StepInfo,
    StepOutcome,
    _current_step,
    _from_step,
    _return_type,
    _with_step,
)

__all__ = ["Bound", "DurablePromise", "Handling", "PlannedStep"]


class Bound(Protocol):
    """What a handler run needs of the activation it runs in."""

    actor_id: str
    host: Host
    store: Store
    fence: Fence | None
    actor: Any


class DurablePromise:
    """A promise a handler started (a call, an external promise, a timer) and may wait on.

    ``result`` returns its value or raises its error, waiting if it is still pending.
    """

    __slots__ = ("id", "_run", "_record", "_target")

    def __init__(
        self, run: Handling, id: str, record: Promise | None, target: str | None = None
    ) -> None:
        self.id = id
        self._run = run
        self._record = record
        self._target = target

    def result(self, type: Any = Any) -> Any:
        """The value decoded as ``type``; raises the rejection's error. Waits if pending."""
        with _tracing.waiting(self._run, [self]):
            record = self._run.await_all([self], wait_all=False)[self.id]
        return self._run.result(record, type, self._target)

    def done(self) -> bool:
        """Whether it is settled, as far as this handler run knows."""
        return self._record is not None and self._record.state.settled

    def __repr__(self) -> str:
        state = self._record.state.value if self._record is not None else "?"
        return f"DurablePromise({self.id!r}, {state})"


class Handling:
    """One handler run's durable machinery (see the module docstring).

    Attributes:
        bound: the activation it runs in.
        message: the message being handled, as it was loaded.
        journal: the message's kept steps.
        cancel: whether the message was canceled, and what that allows.

    """

    def __init__(
        self,
        bound: Bound,
        message: Promise,
        journal: Journal,
        cancel: CancelState | None = None,
    ) -> None:
        self.bound = bound
        self.host = bound.host
        self.store = bound.store
        assert bound.fence is not None
        self.fence: Fence = bound.fence
        self.actor_id = bound.actor_id
        self.message = message
        self.message_id = message.id
        self.journal = journal
        self.settled: dict[str, Promise] = {}
        """Promises known settled (read before the handler started): a wait on them reads
        nothing (a settled promise never changes)."""
        self.cancel = cancel or CancelState(message.id, self.store, self.host.cleanup_timeout)
        self.with_settle: list[tuple[Op, Callable[[Any], None]]] = []
        """Writes to commit with the message's settle, and what to do with each result."""
        self.outbox: list[tuple[Op, Callable[[Any], None]]] = []
        """Writes that go with the handler's next one (``defer``)."""
        self._outbox_lock = threading.Lock()

    def defer(self, op: Op, done: Callable[[Any], None]) -> None:
        """Write ``op`` in the same transaction as this handler's next write (a kept step,
        a promise, a wait, its settle): it costs no commit of its own. ``done`` gets its
        result (or the error that stopped it) after that commit. A handler that crashes has
        its deferred writes made before its crash is handled.
        """
        with self._outbox_lock:
            self.outbox.append((op, done))

    def execute(self, op: Op) -> Any:
        """Write ``op``, with whatever waits in the outbox before it, in one transaction, and
        return its result (raise its error); a bundle's result is its parts' results.
        """
        with self._outbox_lock:
            pending, self.outbox = self.outbox, []
        if not pending:
            return self.store.execute(op)
        parts = [o for o, _ in pending] + (list(op.parts) if op.parts else [op])
        try:
            results = self.store.execute(bundle(parts))
        except BaseException as exc:
            _done(pending, [exc] * len(pending))
            raise
        _done(pending, results[: len(pending)])
        rest = results[len(pending) :]
        if op.parts:
            return rest
        if isinstance(rest[0], BaseException):
            raise rest[0]
        return rest[0]

    def flush(self) -> None:
        """Write what waits in the outbox now, on its own (before a wait, say)."""
        with self._outbox_lock:
            pending, self.outbox = self.outbox, []
        if not pending:
            return
        try:
            results = self.store.execute(bundle([o for o, _ in pending]))
        except BaseException as exc:
            _done(pending, [exc] * len(pending))
            raise
        _done(pending, results)

    def discard(self, why: BaseException) -> None:
        """Drop what waits in the outbox (the handler's writes are refused: it was fenced
        off), telling each ``done`` why.
        """
        with self._outbox_lock:
            pending, self.outbox = self.outbox, []
        _done(pending, [why] * len(pending))

    def settle_with(self, op: Op, done: Callable[[Any], None]) -> None:
        """Write ``op`` in the transaction that settles the message with its reply (all or
        none: if the handler does not end with a reply, it is never written); ``done`` gets
        its result after that commit. Only for writes no later work of the handler depends
        on (a supervisor's revive of a child, say): the handler cannot see them.
        """
        self.with_settle.append((op, done))

    def hold_places(self, planned: list[PlannedStep]) -> None:
        # Steps that run together finish in any order, and a step's row is written when it
        # finishes. Writing a pending row for each first (one group commit) keeps their rows
        # in call order (``ORDER BY seq``) and lets a replay see they had started.
        fresh = [p for p in planned if p.record is None]
        if len(fresh) < 2:
            return
        self.cancel.gate(fresh[0].sid)
        ops = [
            step_op(
                p.sid,
                self.fence,
                state=PromiseState.PENDING,
                value=None,
                fingerprint=p.fp,
                attempt=0,
            )
            for p in fresh
        ]
        records = self.execute(bundle(ops))  # one transaction, with the outbox
        for p, record in zip(fresh, records, strict=True):
            if isinstance(record, BaseException):
                raise record
            p.record = record
            self.journal.keep(record)

    def plan_step(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        retry: RetryPolicy | None,
        returns: Any,
        timeout: float | None = None,
    ) -> PlannedStep:
        label = name or callable_name(fn)
        fp = fingerprint(StepKind.STEP, label, [list(args), kwargs] if kwargs else list(args))
        rtype = returns if returns is not None else _return_type(fn)
        base = self.journal.next()
        sid, record = self.journal.attempt(base, fp)
        policy = retry or NO_RETRY
        step = PlannedStep(self, sid, label, fp, fn, args, kwargs, policy, rtype, record, timeout)
        step.incarnation = int(sid[len(base) + 1 :]) if sid != base else 0  # "{base}~N"
        return step

    def invoke(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        info: StepInfo,
        timeout: float | None = None,
    ) -> Any:
        own = timeout
        timeout = self.nearest(timeout)
        try:
            return self.call(fn, args, kwargs, info, own, timeout)
        except StepTimedOutError:
            if timeout is not None and (own is None or timeout < own):
                # The message's deadline, not the step's own, cut it: the handler is out of
                # time (a cancel), and the step's attempt is not a failure to retry or keep.
                self.cancel.request()
                self.cancel.deadline = True
                self.cancel.reason = f"the deadline of {self.message_id} passed"
                self.cancel.gate(info.id)
                raise Canceled(self.cancel.reason, deadline=True) from None
            raise

    def call(
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
                result = self.run_async(fn(*args, **kwargs), info, timeout)
            else:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = self.run_async(result, info, timeout)
        finally:
            _current_step.reset(token)
        elapsed = time.monotonic() - started
        if own is not None and elapsed > own:
            # A sync function cannot be interrupted: a late result counts as a timeout.
            raise StepTimedOutError(f"step {info.id} took longer than {own:.3f} s", info.id)
        if timeout is not None and elapsed > timeout:
            # It outlived its message's deadline: its result is kept, but the handler's next
            # durable operation sees the deadline (as for a cancel).
            self.cancel.request()
            self.cancel.deadline = True
            self.cancel.reason = f"the deadline of {self.message_id} passed"
        return result

    def run_async(self, awaitable: Any, info: StepInfo, timeout: float | None) -> Any:
        future = self.host.start_coroutine(_with_step(info, awaitable, timeout))
        self.cancel.track(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            # Canceled because the message was: nothing is kept for this step.
            self.cancel.gate(info.id)
            raise Canceled(self.cancel.reason, self.cancel.deadline) from None
        except TimeoutError as exc:
            if timeout is not None and isinstance(exc, asyncio.TimeoutError | TimeoutError):
                raise StepTimedOutError(
                    f"step {info.id} took longer than {timeout:.3f} s", info.id
                ) from exc
            raise
        finally:
            self.cancel.untrack(future)

    def nearest(self, timeout: float | None) -> float | None:
        """The step's timeout, or less if the message's deadline comes first."""
        deadline = self.message.timeout_at
        if deadline is None:
            return timeout
        left = max(0.001, (deadline - datetime.now(UTC)).total_seconds())
        return left if timeout is None else min(timeout, left)

    def keep_step(
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
            self.fence,
            state=state,
            value=value,
            fingerprint=fp,
            attempt=attempt,
            next_attempt_at=next_attempt_at,
            first=first,
        )
        record: Promise = self.execute(op)
        self.journal.keep(record)
        reached("step.kept", sid)
        return record

    def step_value(self, record: Promise, rtype: Any) -> Any:
        if record.state is PromiseState.RESOLVED:
            return decode(record.value, rtype)
        info = record.error()
        if info is None:
            raise ActorError(f"step {record.id} is {record.state.value} with no error recorded")
        raise _from_step(rebuild_error(info), record.id)

    def wait_for_retry(self, sid: str, attempt: int, next_at: datetime | None) -> None:
        if self.cancel.dry:
            raise EndOfJournal(sid)
        if next_at is None:
            return
        remaining = (next_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return
        if remaining <= max(self.host.suspend_after, 0.0):
            if self.cancel.requested.wait(remaining):
                self.cancel.gate(sid)
            return
        # A long backoff costs a timer row, not a thread: wait on a timer under the step.
        timer_id = f"{sid}/retry-{attempt}"
        timer = self.execute(
            promise_step_op(
                timer_id,
                self.fence,
                kind=PromiseKind.TIMER,
                fingerprint=fingerprint(StepKind.RETRY),
                at=next_at,
            )
        )
        self.await_all([DurablePromise(self, timer_id, timer)], wait_all=False)

    def cut_off(self, record: Promise) -> None:
        """A promise this handler waited on was canceled or timed out: if that is because the
        handler's own message was (the cancel reaches everything under it), it is a
        ``Canceled`` for the handler, not an error of that promise.
        """
        if record.state not in (PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT):
            return
        if not self.cancel.requested.is_set():
            own = self.store.find(self.message_id)
            if own is None or not own.state.settled:
                return
            self.cancel.request()
        if self.cancel.cleanup_until is None:
            self.cancel.gate(record.id)

    def await_all(self, promises: list[DurablePromise], *, wait_all: bool) -> dict[str, Promise]:
        self.flush()  # what it waits on may depend on what it sent
        known: dict[str, Promise] = {}
        for p in promises:
            if p._record is not None and p._record.state.settled:
                known[p.id] = p._record
        if _satisfied(known, promises, wait_all):
            return known
        pending = [p.id for p in promises if p.id not in known]
        known.update(self.refresh(pending))
        if _satisfied(known, promises, wait_all):
            return known
        self.cancel.gate(promises[0].id)
        grace = self.host.suspend_after
        if grace > 0 and not _due_after(promises, known, grace, wait_all):
            deadline = time.monotonic() + grace
            woken = Signal()
            pending = [p.id for p in promises if p.id not in known]
            sub = self.store.subscribe(
                EventKind.SETTLED, [*pending, self.message_id], lambda k, key, r: woken.set()
            )
            try:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    woken.wait(left)
                    woken.clear()
                    if self.cancel.requested.is_set():
                        self.cancel.gate(promises[0].id)
                    known.update(self.refresh([p.id for p in promises if p.id not in known]))
                    if _satisfied(known, promises, wait_all):
                        return known
            finally:
                sub.cancel()
        raise Suspend([p.id for p in promises if p.id not in known], wait_all)

    def refresh(self, ids: list[str]) -> dict[str, Promise]:
        if not ids:
            return {}
        known = {i: self.settled[i] for i in ids if i in self.settled}
        rest = [i for i in ids if i not in known]
        found = self.store.get_many(rest) if rest else {}
        return {**known, **{id: p for id, p in found.items() if p.state.settled}}

    def result(self, record: Promise, type: Any, target: str | None) -> Any:
        if record.kind is PromiseKind.TIMER and record.state is PromiseState.RESOLVED:
            return None
        self.cut_off(record)
        if (
            target is not None
            and record.state in (PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT)
            and self.is_child(target)
        ):
            how = "canceled" if record.state is PromiseState.REJECTED_CANCELED else "timed out"
            raise ChildCanceledError(f"child {target!r} was {how} ({record.id})", target)
        return result_of(record, type, is_child=self.is_child if target else None)

    def is_child(self, actor_id: str) -> bool:
        record = self.store.actor_row(actor_id)
        return record is not None and record.parent == self.actor_id


class PlannedStep:
    """A step with its id and journal record fixed, ready to run (or to replay)."""

    __slots__ = (
        "handling",
        "sid",
        "label",
        "fp",
        "fn",
        "args",
        "kwargs",
        "policy",
        "rtype",
        "record",
        "timeout",
        "incarnation",
        "trace",
    )

    def __init__(
        self,
        run: Handling,
        sid: str,
        label: str,
        fp: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy,
        rtype: Any,
        record: Promise | None,
        timeout: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.handling = run
        self.sid = sid
        self.label = label
        self.fp = fp
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.policy = policy
        self.rtype = rtype
        self.record = record
        self.incarnation = 0
        self.trace = _tracing.current_context()
        """The trace context the step was asked for in (its span's parent), if tracing."""

    def _first(self) -> bool:
        """Whether the step has no row yet (its first keep may share a multi-row insert)."""
        return self.record is None

    def outcome(self) -> StepOutcome:
        try:
            return StepOutcome(value=self.run())
        except (Exception, Suspend, Canceled) as exc:
            return StepOutcome(error=exc)

    def run(self) -> Any:
        replayed = self.record is not None and self.record.state.settled
        with _tracing.step(self.handling, self.sid, self.label, replayed, self.trace):
            return self._run()

    def _run(self) -> Any:
        run, sid, fp = self.handling, self.sid, self.fp
        record = self.record
        attempt = 1
        if record is not None:
            if record.state is PromiseState.REJECTED_CANCELED:
                # Pending when its message was canceled (the cancel reached it): the step was
                # cut off, not failed. A read-only replay stops here; a handler is canceled.
                if run.cancel.dry:
                    raise EndOfJournal(sid)
                run.cancel.request()
                run.cancel.gate(sid)
                raise Canceled(run.cancel.reason, run.cancel.deadline)
            if record.state.settled:
                return run.step_value(record, self.rtype)
            attempt = record.attempt + 1
            run.wait_for_retry(sid, record.attempt, record.next_attempt_at)
        while True:
            run.cancel.gate(sid)
            step_started(self.label, sid)
            try:
                step = StepInfo(sid, attempt, self.incarnation)
                value = run.invoke(self.fn, self.args, self.kwargs, step, self.timeout)
            except Exception as exc:
                if run.cancel.requested.is_set() and run.cancel.cleanup_until is None:
                    # Failed while its message was being canceled: nothing to keep or retry.
                    run.cancel.gate(sid)
                delay = self.policy.delay(attempt) if self.policy.retries(exc) else None
                if delay is None:
                    info = error_info(exc)
                    state = (
                        PromiseState.REJECTED_TIMEDOUT
                        if isinstance(exc, StepTimedOutError)
                        else PromiseState.REJECTED
                    )
                    kept = run.keep_step(
                        sid, state, encode(info, what="error"), fp, attempt, first=self._first()
                    )
                    raise _from_step(rebuild_error(kept.error() or info), sid) from exc
                # A server's own "retry after" is a floor for the backoff.
                delay = max(delay, float(getattr(exc, "retry_after", None) or 0.0))
                next_at = datetime.now(UTC) + timedelta(seconds=delay)
                kept = run.keep_step(
                    sid, PromiseState.PENDING, None, fp, attempt, next_at, first=self._first()
                )
                self.record = kept
                if kept.state.settled:  # kept by another activation meanwhile
                    return run.step_value(kept, self.rtype)
                run.wait_for_retry(sid, attempt, next_at)
                attempt += 1
                continue
            value_json = encode(value, what=f"result of {self.label}")
            kept = run.keep_step(
                sid, PromiseState.RESOLVED, value_json, fp, attempt, first=self._first()
            )
            return run.step_value(kept, self.rtype)


def _satisfied(
    known: Mapping[str, Promise], promises: Iterable[DurablePromise], wait_all: bool
) -> bool:
    # ``known`` holds the settled ones; the others exist and are pending as far as we know.
    ids = [p.id for p in promises]
    states = {i: known[i].state if i in known else PromiseState.PENDING for i in ids}
    return wait_is_over(ids, states, wait_all)


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


def _done(pending: list[tuple[Op, Callable[[Any], None]]], results: list[Any]) -> None:
    """Tell each deferred op's callback its result; every one is told, even if one raises (a
    send's callback hands its message over: one left out would leave its message unrun).
    """
    failed: BaseException | None = None
    for (_, done), result in zip(pending, results, strict=True):
        try:
            done(result)
        except BaseException as exc:
            failed = failed or exc
    if failed is not None:
        raise failed
