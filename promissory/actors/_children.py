"""The supervisor's interface: child specs, the child-administration messages and results.

``child(...)`` makes a child spec; ``StartChild``, ``TerminateChild``, ``RestartChild``,
``DeleteChild``, ``WhichChildren`` and ``CountChildren`` are the messages a ``Supervisor``
answers with OTP's results; ``SupervisorRef`` wraps them as methods.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import InvalidInputError
from ..store import encode
from ._actor import DurableActor
from ._ref import ActorRef
from ._spec import Backoff, ChildSpec, Restart

__all__ = [
    "ChildDef",
    "ChildInfo",
    "ChildResult",
    "CountChildren",
    "Counts",
    "DeleteChild",
    "RestartChild",
    "StartChild",
    "SupervisorRef",
    "SupervisorStarted",
    "TerminateChild",
    "WhichChildren",
    "child",
]


class ChildDef(msgspec.Struct, frozen=True, kw_only=True):
    """A child as a supervisor starts it: its id (local to the supervisor), class and spec.

    ``kind`` is empty in a request to start a member of a ``simple_one_for_one`` pool by id:
    the pool's own child spec gives it.
    """

    id: str
    kind: str
    spec: ChildSpec = ChildSpec()
    state: msgspec.Raw = msgspec.Raw(b"null")
    """Its initial state as JSON (``null``: none). Not ``Raw | None``: msgspec cannot decode
    a ``Raw`` inside a union, and a ``ChildDef`` travels in messages."""

    @property
    def state_json(self) -> str | None:
        """The initial state's JSON, or ``None`` for none."""
        text = bytes(self.state).decode()
        return None if text in ("", "null") else text


def child(
    actor_class: type[DurableActor[Any]],
    *,
    id: str,
    state: Any = None,
    restart: Restart | str = Restart.PERMANENT,
    shutdown: float | None = 5.0,
    significant: bool = False,
    backoff: Backoff | None = None,
) -> ChildDef:
    """A child spec: ``actor_class`` started as ``{supervisor id}/{id}``.

    Args:
        restart: ``permanent``, ``transient`` or ``temporary``.
        shutdown: seconds it may take to finish its current message when stopped (0: brutal
            kill, ``None``: as long as it takes).
        significant: its normal end counts for the supervisor's ``auto_shutdown``.
        backoff: wait between its restarts.

    """
    spec = ChildSpec(
        restart=Restart(restart), shutdown=shutdown, significant=significant, backoff=backoff
    )
    raw = msgspec.Raw(encode(state, what="state").encode())
    return ChildDef(id=id, kind=actor_class.kind(), spec=spec, state=raw)


class SupervisorStarted(msgspec.Struct, frozen=True):
    """Sent to a supervisor at each (re)start: start the static children, in order."""

    epoch: int = 0


class StartChild(msgspec.Struct, frozen=True):
    """Start a dynamic child (OTP's ``start_child``)."""

    child: ChildDef


class TerminateChild(msgspec.Struct, frozen=True):
    """Stop a child and keep its spec (OTP's ``terminate_child``)."""

    id: str


class RestartChild(msgspec.Struct, frozen=True):
    """Start a terminated child again (OTP's ``restart_child``)."""

    id: str


class DeleteChild(msgspec.Struct, frozen=True):
    """Forget a terminated child's spec (OTP's ``delete_child``)."""

    id: str


class WhichChildren(msgspec.Struct, frozen=True):
    """List the children, in start order."""


class CountChildren(msgspec.Struct, frozen=True):
    """Count the children."""


class ChildResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An answer to a child-administration message, as OTP's results.

    ``ok`` is ``True`` on success; otherwise ``error`` is ``"already_started"``,
    ``"already_present"``, ``"running"``, ``"restarting"``, ``"not_found"`` or a reason.
    ``actor`` is the child's actor id when there is one.
    """

    ok: bool
    error: str | None = None
    actor: str | None = None


class ChildInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One child as ``which_children`` lists it."""

    id: str
    actor: str
    kind: str
    status: str
    supervisor: bool
    restarts: int
    restart: Restart


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    """``count_children``: specs kept, children alive, of which supervisors and workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


class SupervisorRef:
    """A supervisor's ref with OTP's child-administration API as methods (each an ``ask``).

    Example:
        >>> sup = SupervisorRef(rt.spawn(Pool, id="pool"))  # doctest: +SKIP
        >>> sup.start_child(child(Worker, id="w1", restart="transient"))  # doctest: +SKIP
        ChildResult(ok=True, actor='pool/w1')

    """

    def __init__(self, ref: ActorRef, timeout: float = 30.0) -> None:
        self.ref = ref
        self.timeout = timeout

    def _ask(self, msg: Any, type: Any) -> Any:
        return self.ref.ask(msg).get(self.timeout, type=type)

    def start_child(self, spec: ChildDef | str, *, state: Any = None) -> ChildResult:
        """Start a dynamic child: from a child spec, or, in a ``simple_one_for_one`` pool, by
        its id alone (with an initial ``state``), from the pool's one child spec.

        Example:
            >>> pool.start_child("w7", state=Quota(limit=3))  # doctest: +SKIP
            ChildResult(ok=True, actor='pool/w7')

        """
        if isinstance(spec, str):
            raw = msgspec.Raw(encode(state, what="state").encode())
            spec = ChildDef(id=spec, kind="", state=raw)
        elif state is not None:
            raise InvalidInputError("give the state in the child spec, or the id alone with it")
        result: ChildResult = self._ask(StartChild(spec), ChildResult)
        return result

    def terminate_child(self, id: str) -> ChildResult:
        """Stop a child, keeping its spec."""
        result: ChildResult = self._ask(TerminateChild(id), ChildResult)
        return result

    def restart_child(self, id: str) -> ChildResult:
        """Start a terminated child again."""
        result: ChildResult = self._ask(RestartChild(id), ChildResult)
        return result

    def delete_child(self, id: str) -> ChildResult:
        """Forget a terminated child."""
        result: ChildResult = self._ask(DeleteChild(id), ChildResult)
        return result

    def which_children(self) -> list[ChildInfo]:
        """The children in start order."""
        result: list[ChildInfo] = self._ask(WhichChildren(), list[ChildInfo])
        return result

    def count_children(self) -> Counts:
        """How many children, by kind."""
        result: Counts = self._ask(CountChildren(), Counts)
        return result
