"""Steps as data: what a running step knows of itself, and what ``step_many`` takes and gives.

``current_step()`` gives the function a step runs its ``StepInfo``: its id, the idempotency
key that stays the same across retries and crashes, and its attempt. ``StepCall`` and
``StepOutcome`` are ``Context.step_many``'s input and output. How a step runs and is kept is
``_engine``'s (``PlannedStep``).
"""

from __future__ import annotations

import asyncio
import contextvars
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .. import _tracing
from ._retry import RetryPolicy

if TYPE_CHECKING:
    pass

__all__ = ["StepCall", "StepInfo", "StepOutcome", "current_step"]


class StepInfo(msgspec.Struct, frozen=True):
    """The step a function runs as, inside ``ctx.step`` (see ``current_step``).

    A step runs again in two ways. Its ``RetryPolicy`` retries it within one incarnation of
    its actor: ``attempt`` counts those tries, from 1, and the id stays the same. A failure
    that crashes the actor (no retry left, or none asked for) is kept, and the actor's next
    incarnation, replaying the message, tries the step again as a new step under
    ``{id}~1`` (then ``~2``…): ``incarnation`` is that ``N`` (0 the first time), and
    ``attempt`` starts again at 1.

    Attributes:
        id: the step id, ``{message id}/{position}``, with ``~N`` when ``incarnation`` is N.
        attempt: this try's number under this id, from 1 (kept across crashes, so a retry
            after a crash mid-backoff goes on counting).
        incarnation: how many earlier incarnations of the actor failed at this step (0 the
            first time it runs).

    Example:
        >>> def charge(order: int) -> str:
        ...     step = current_step()
        ...     log.info("charging %s: try %d of incarnation %d", order, step.attempt,
        ...              step.incarnation)
        ...     return payments.charge(order, idempotency_key=step.idempotency_key)

    """

    id: str
    attempt: int
    incarnation: int = 0

    @property
    def idempotency_key(self) -> str:
        """The step id: the same across every attempt and every replay of this step (a new
        incarnation's try, under ``~N``, is a new step with a new key).
        """
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
    _tracing.enter_step(info.id)
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


STEP_ATTRIBUTE = "promissory_step"
"""The attribute naming the step a re-raised step failure came from (see ``Journal.attempt``)."""


def _from_step(error: BaseException, step: str) -> BaseException:
    try:
        setattr(error, STEP_ATTRIBUTE, step)
    except AttributeError:  # an exception type with __slots__ and no room for it
        pass
    return error
