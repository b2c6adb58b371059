"""Steps: a function run once and kept, its retries, and what it knows while it runs.

``_PlannedStep`` is one ``ctx.step`` with its id and journal record fixed: replayed from the
record when there is one, else run (attempt after attempt, as its ``RetryPolicy`` says, with
the attempt count and next attempt's time kept in its row) and its outcome kept before the
handler goes on. ``current_step()`` gives the running function its step id, the idempotency
key that stays the same across retries and crashes.
"""

from __future__ import annotations

import asyncio
import contextvars
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from .._crashpoints import step_started
from ..errors import StepTimedOutError
from ..store import Promise, PromiseState, encode, error_info, rebuild_error
from ._cancel import Cancelled, EndOfJournal
from ._retry import RetryPolicy
from ._signals import Suspend

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["StepCall", "StepInfo", "StepOutcome", "current_step"]


class StepInfo(msgspec.Struct, frozen=True):
    """The step a function runs as: its id (use it as an idempotency key) and attempt number."""

    id: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """The step id: the same across every attempt and every replay of this step."""
        return self.id


_current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "promissory_step", default=None
)


def current_step() -> StepInfo | None:
    """The step the calling function runs as inside ``ctx.step``, or ``None`` outside one.

    Example:
        >>> def charge(order: int) -> str:
        ...     key = current_step().idempotency_key  # the same on every retry
        ...     return payments.charge(order, idempotency_key=key)

    """
    return _current_step.get()


_return_types: dict[Any, Any] = {}


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        return _return_types[fn]
    except (KeyError, TypeError):
        pass
    try:
        hints = typing.get_type_hints(fn)
        rtype = hints.get("return", Any)
    except Exception:
        rtype = Any
    if rtype is None or rtype is type(None):
        rtype = Any
    origin = typing.get_origin(rtype)
    if origin is not None and getattr(origin, "__name__", "") in ("Coroutine", "Awaitable"):
        args = typing.get_args(rtype)
        rtype = args[-1] if args else Any
    try:
        _return_types[fn] = rtype
    except TypeError:
        pass
    return rtype


async def _with_step(info: StepInfo, awaitable: Any, timeout: float | None = None) -> Any:
    _current_step.set(info)
    if timeout is None:
        return await awaitable
    return await asyncio.wait_for(awaitable, timeout)


class StepCall(msgspec.Struct, frozen=True, kw_only=True):
    """One step for ``Context.step_many``: the function, its arguments and options."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    name: str | None = None
    retry: RetryPolicy | None = None
    returns: Any = None
    timeout: float | None = None


class StepOutcome(msgspec.Struct, frozen=True):
    """How one step of ``step_many`` ended: its value, or the error it failed with."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the step succeeded."""
        return self.error is None


class _PlannedStep:
    """A step with its id and journal record fixed, ready to run (or to replay)."""

    __slots__ = (
        "ctx",
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
    )

    def __init__(
        self,
        ctx: Context,
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
        self.ctx = ctx
        self.sid = sid
        self.label = label
        self.fp = fp
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.policy = policy
        self.rtype = rtype
        self.record = record

    def _first(self) -> bool:
        """Whether the step has no row yet (its first keep may share a multi-row insert)."""
        return self.record is None

    def outcome(self) -> StepOutcome:
        try:
            return StepOutcome(value=self.run())
        except (Exception, Suspend, Cancelled) as exc:
            return StepOutcome(error=exc)

    def run(self) -> Any:
        ctx, sid, fp = self.ctx, self.sid, self.fp
        record = self.record
        attempt = 1
        if record is not None:
            if record.state is PromiseState.REJECTED_CANCELED:
                # Pending when its message was canceled (the cancel reached it): the step was
                # cut off, not failed. A read-only replay stops here; a handler is canceled.
                if ctx._cancel.dry:
                    raise EndOfJournal(sid)
                ctx._cancel.request()
                ctx._cancel.gate(sid)
                raise Cancelled(ctx._cancel.reason, ctx._cancel.deadline)
            if record.state.settled:
                return ctx._step_value(record, self.rtype)
            attempt = record.attempt + 1
            ctx._wait_for_retry(sid, record.attempt, record.next_attempt_at)
        while True:
            ctx._cancel.gate(sid)
            step_started(self.label, sid)
            try:
                step = StepInfo(sid, attempt)
                value = ctx._invoke(self.fn, self.args, self.kwargs, step, self.timeout)
            except Exception as exc:
                if ctx._cancel.requested.is_set() and ctx._cancel.cleanup_until is None:
                    # Failed while its message was being canceled: nothing to keep or retry.
                    ctx._cancel.gate(sid)
                delay = self.policy.delay(attempt) if self.policy.retries(exc) else None
                if delay is None:
                    info = error_info(exc)
                    state = (
                        PromiseState.REJECTED_TIMEDOUT
                        if isinstance(exc, StepTimedOutError)
                        else PromiseState.REJECTED
                    )
                    kept = ctx._keep_step(
                        sid, state, encode(info, what="error"), fp, attempt, first=self._first()
                    )
                    raise _from_step(rebuild_error(kept.error() or info), sid) from exc
                # A server's own "retry after" is a floor for the backoff.
                delay = max(delay, float(getattr(exc, "retry_after", None) or 0.0))
                next_at = datetime.now(UTC) + timedelta(seconds=delay)
                kept = ctx._keep_step(
                    sid, PromiseState.PENDING, None, fp, attempt, next_at, first=self._first()
                )
                self.record = kept
                if kept.state.settled:  # kept by another activation meanwhile
                    return ctx._step_value(kept, self.rtype)
                ctx._wait_for_retry(sid, attempt, next_at)
                attempt += 1
                continue
            value_json = encode(value, what=f"result of {self.label}")
            kept = ctx._keep_step(
                sid, PromiseState.RESOLVED, value_json, fp, attempt, first=self._first()
            )
            return ctx._step_value(kept, self.rtype)


STEP_ATTRIBUTE = "promissory_step"
"""The attribute naming the step a re-raised step failure came from (see ``Journal.attempt``)."""


def _from_step(error: BaseException, step: str) -> BaseException:
    try:
        setattr(error, STEP_ATTRIBUTE, step)
    except AttributeError:  # an exception type with __slots__ and no room for it
        pass
    return error
