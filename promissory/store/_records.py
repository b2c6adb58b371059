"""The records the store reads and writes: promises, their states, and stored errors.

A ``Promise`` is one row of the ``promises`` table as the store returns it. Its ``param`` and
``value`` stay raw JSON until a caller decodes them with the type it expects, so that reading
a promise never guesses at types.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from ._codec import decode

T = TypeVar("T")

__all__ = ["ErrorInfo", "Outcome", "Page", "Promise", "PromiseKind", "PromiseState"]


class PromiseState(enum.StrEnum):
    """The five states of a durable promise; every state but ``PENDING`` is final."""

    PENDING = "pending"
    RESOLVED = "resolved"
    REJECTED = "rejected"
    REJECTED_CANCELED = "rejected_canceled"
    REJECTED_TIMEDOUT = "rejected_timedout"

    @property
    def settled(self) -> bool:
        """Whether the state is final."""
        return self is not PromiseState.PENDING

    @property
    def rejected(self) -> bool:
        """Whether the state is one of the three rejections."""
        return self.value.startswith("rejected")


class PromiseKind(enum.StrEnum):
    """What a promise stands for; the runtime's reading of a row, kept in its ``kind`` column."""

    PROMISE = "promise"
    """A plain promise that something outside settles: a person, a webhook, another process."""
    TIMER = "timer"
    """A durable timer: resolved, not timed out, when its ``timeout_at`` passes."""
    MESSAGE = "message"
    """A message to an actor: its recipient handles it and settles it with the reply."""
    STEP = "step"
    """A durable step inside the handling of a message."""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A failure as it is stored in a rejected promise's ``value``.

    Attributes:
        type: the qualified name of the exception type, ``module.QualName``.
        message: ``str()`` of the exception.
        args: the exception's arguments, when they encode as JSON; used to rebuild it.
        traceback: the traceback text where it was raised, if any.
        failed_actor: in a message rejected because its recipient failed and was given up,
            that actor's id (the failure is the actor's, not the message's).

    """

    type: str
    message: str = ""
    args: list[Any] | None = None
    traceback: str | None = None
    failed_actor: str | None = None


class Promise(msgspec.Struct, frozen=True, kw_only=True):
    """One durable promise, as read from the store.

    Attributes:
        id: the promise id, hierarchical and ``/``-separated.
        state: its state; a pending promise whose timeout passed reads as timed out.
        param: the raw JSON it was created with, or ``None``.
        value: the raw JSON it was settled with (for a rejection, an ``ErrorInfo``), or ``None``.
        tags: an object of strings.
        timeout_at: when it times out, or ``None`` for never.
        created_at: when it was created, by the database's clock.
        settled_at: when it was settled, or ``None`` while pending.
        kind: what it stands for (see ``PromiseKind``).
        recipient: for a message, the id of the actor it is addressed to.
        attempt: how many attempts a step has made so far.
        next_attempt_at: when a retrying step may try again.
        fingerprint: for a step, what it asked for (kind, name, hash of arguments).
        seq: creation order (``ORDER BY seq`` lists promises as they were made).

    """

    id: str
    state: PromiseState
    param: msgspec.Raw | None = None
    value: msgspec.Raw | None = None
    tags: dict[str, str] = {}
    timeout_at: datetime | None = None
    created_at: datetime
    settled_at: datetime | None = None
    kind: PromiseKind = PromiseKind.PROMISE
    recipient: str | None = None
    attempt: int = 0
    next_attempt_at: datetime | None = None
    fingerprint: str | None = None
    seq: int = 0

    def param_as(self, type: type[T] = Any) -> T:  # type: ignore[assignment]
        """Decode ``param`` as ``type`` (default: plain JSON values).

        Example:
            >>> p.param_as(Order)  # doctest: +SKIP
            Order(id=7, total=12.5)

        """
        result: T = decode(self.param, type)
        return result

    def value_as(self, type: type[T] = Any) -> T:  # type: ignore[assignment]
        """Decode ``value`` as ``type`` (default: plain JSON values)."""
        result: T = decode(self.value, type)
        return result

    def error(self) -> ErrorInfo | None:
        """The stored failure of a rejected promise, or ``None``."""
        if not self.state.rejected or self.value is None:
            return None
        try:
            info: ErrorInfo = decode(self.value, ErrorInfo)
            return info
        except Exception:
            return ErrorInfo(type="builtins.Exception", message=bytes(self.value).decode())


class Outcome(msgspec.Struct, frozen=True):
    """What a create or settle did: the promise as it now stands, and whether this call changed it.

    ``applied`` is ``False`` when the call found the promise already there (create) or already
    settled (settle) and so left it as it was.
    """

    promise: Promise
    applied: bool


class ActorCancel(msgspec.Struct, frozen=True):
    """What ``Store.cancel_actor`` did: whether it marked the actor to end (``False``: it had
    ended already, and was left as it was), and the messages it canceled.
    """

    actor: str
    applied: bool
    canceled: list[str]


class Page(msgspec.Struct, frozen=True):
    """One page of a search: the promises and the cursor for the next page (``None`` at the end)."""

    items: list[Promise]
    cursor: str | None
