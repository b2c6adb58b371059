"""The operations a person takes from outside: settle a promise, cancel a run or an actor,
resume a run. ``promissory resolve``/``reject``/``cancel``/``resume`` and the web view's
buttons both call these, so they do the same thing.

Example:
    >>> done = cancel(store, "agent/run/42", "the user closed the tab")  # doctest: +SKIP
    >>> done.applied, done.what
    (True, 'promise')

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .. import _tracing
from ..errors import ActorNotFoundError, PromiseNotFoundError
from ..store import Outcome, Store

if TYPE_CHECKING:
    from ..runtime import Runtime


class Canceled(msgspec.Struct, frozen=True, kw_only=True):
    """What ``cancel`` did.

    Attributes:
        what: ``promise`` (a run, a message, an approval: it and all pending under it) or
            ``actor`` (it and its subtree end; its pending messages are canceled).
        applied: whether anything was pending to cancel (``False``: it had ended already).
        outcome: for a promise, the promise as it now stands.
        messages: for an actor, the messages canceled.

    """

    what: str
    applied: bool
    outcome: Outcome | None = None
    messages: list[str] = []


def resolve(store: Store, id: str, value: Any = None) -> Outcome:
    """Resolve a pending promise with ``value`` (an approval: ``True``).

    Raises:
        PromiseNotFoundError: no promise has this id.

    """
    with _tracing.span(f"resolve {id}", {"promissory.promise.id": id}):
        return store.resolve(id, value)


def reject(store: Store, id: str, error: str | None = None) -> Outcome:
    """Reject a pending promise with ``error``'s text.

    Raises:
        PromiseNotFoundError: no promise has this id.

    """
    with _tracing.span(f"reject {id}", {"promissory.promise.id": id}):
        return store.reject(id, error)


def cancel(store: Store, id: str, reason: str | None = None) -> Canceled:
    """Cancel a promise (a run: it and every pending promise under it, in one transaction),
    or, when no promise has the id, an actor (marked to end; the node hosting it ends it and
    its children, each after its handlers' cleanup).

    Raises:
        ActorNotFoundError: neither a promise nor an actor has this id.

    """
    with _tracing.span(f"cancel {id}", {"promissory.promise.id": id, "reason": reason}):
        if store.find(id) is None:
            done = store.cancel_actor(id, reason)
            return Canceled(what="actor", applied=done.applied, messages=list(done.canceled))
        try:
            outcome = store.cancel(id, reason)
        except PromiseNotFoundError:  # gone meanwhile? promises are never deleted
            raise ActorNotFoundError(f"no promise or actor has the id {id!r}") from None
        return Canceled(what="promise", applied=outcome.applied, outcome=outcome)


def resume(rt: Runtime, id: str) -> str:
    """Continue a canceled or timed-out run from its last whole turn, hosted by ``rt``;
    return the new run's id.

    Raises:
        PromiseNotFoundError: no run has this id.
        InvalidInputError: it is running, finished, or cannot be resumed.
        LookupError: its agent is not defined in this process.

    """
    handle = rt.resume(id)
    return str(handle.id)
