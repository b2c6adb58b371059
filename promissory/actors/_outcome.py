"""What a settled promise means to the code that awaited it: a value, or an exception.

One function turns a settled promise into the value or the raised error, so a reply seen by
``ask``, a call's result inside a handler, and a replay of either all behave the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import (
    ChildFailedError,
    PromiseCanceledError,
    PromiseFailedError,
    PromiseTimedOutError,
)
from ..store import Promise, PromiseState, decode, rebuild_error


def result_of(
    promise: Promise, type: Any = Any, *, is_child: Callable[[str], bool] | None = None
) -> Any:
    """The value of a settled promise decoded as ``type``, or the error its rejection holds.

    ``is_child``: tells whether an actor is a child of the one awaiting; a rejection caused by
    the failure of one of its own children is raised as ``ChildFailedError``, with the child's error
    as its cause.

    Raises:
        PromiseTimedOutError: it timed out.
        PromiseCanceledError: it was canceled (unless the stored reason says otherwise).
        ChildFailedError: a child of the awaiting actor failed and was given up.
        BaseException: the stored error, rebuilt (``RemoteError`` if its type is unknown).

    """
    state = promise.state
    if state is PromiseState.RESOLVED:
        return decode(promise.value, type)
    if state is PromiseState.PENDING:
        raise PromiseFailedError(f"promise {promise.id!r} is still pending", promise.id)
    if state is PromiseState.REJECTED_TIMEDOUT:
        raise PromiseTimedOutError(f"promise {promise.id!r} timed out", promise.id)
    failure = promise.error()
    if failure is None:
        if state is PromiseState.REJECTED_CANCELED:
            raise PromiseCanceledError(f"promise {promise.id!r} was canceled", promise.id)
        raise PromiseFailedError(f"promise {promise.id!r} was rejected", promise.id)
    error = rebuild_error(failure)
    if failure.failed_actor is not None and is_child is not None:
        if is_child(failure.failed_actor):
            wrapped = ChildFailedError(
                f"child {failure.failed_actor!r} failed: {failure.type}: {failure.message}",
                failure.failed_actor,
            )
            wrapped.cause = error
            raise wrapped from error
    raise error
