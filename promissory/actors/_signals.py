"""Control-flow signals and the messages the runtime sends on an actor's behalf.

``Suspend`` is raised through user code (a ``BaseException``, so ``except Exception`` cannot
swallow it). ``ChildExit`` and ``Terminated`` are messages: a supervisor receives the first
when a child ends, a watcher the second when the actor it watches ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

from ..store import ErrorInfo, PromiseState
from ._spec import Exit


class Suspend(BaseException):  # noqa: N818 - a signal, not an error
    """Raised in a handler that waits on promises still pending: its turn ends here.

    The activation records what the message waits on and gives its thread back; when the
    promises settle, the message is handled again from the start (replayed).

    Attributes:
        awaiting: the ids of the promises waited on.
        wait_all: wake only once all have settled (or one is rejected), not at the first.

    """

    def __init__(self, awaiting: list[str], wait_all: bool = False) -> None:
        super().__init__(awaiting, wait_all)
        self.awaiting = awaiting
        self.wait_all = wait_all


def wait_is_over(
    awaiting: Sequence[str], states: Mapping[str, PromiseState], wait_all: bool
) -> bool:
    """Whether a wait on ``awaiting`` is over, given the states of the promises (those missing
    from ``states`` do not exist: nothing can settle them, so the wait is over and the replay
    says why).

    A wait on any ends at the first settled promise; a wait on all ends when every one has
    settled, or at the first rejected one (a ``gather`` fails fast). The one rule used by the
    handler that waits, the activation that suspends, and the node that wakes it.
    """
    ids = set(awaiting)
    if not ids or not ids <= states.keys():
        return True
    settled = [states[i] for i in ids if states[i].settled]
    if not wait_all:
        return bool(settled)
    return len(settled) == len(ids) or any(s.rejected for s in settled)


class ChildExit(msgspec.Struct, frozen=True, kw_only=True):
    """Sent to a supervisor when one of its children ended (crashed, stopped, escalated).

    Attributes:
        child: the child's actor id.
        exit: how it ended.
        error: the failure, for an abnormal or escalated exit.
        epoch: the child's epoch after the exit was recorded (older exits are stale).
        at: the database's time when the exit was recorded (seconds since 1970), the time
            the supervisor's intensity window counts the restart at.

    """

    child: str
    exit: Exit
    error: ErrorInfo | None = None
    epoch: int = 0
    at: float | None = None


class Terminated(msgspec.Struct, frozen=True, kw_only=True):
    """Sent to each watcher when the actor it watches has ended for good.

    Attributes:
        actor: the id of the actor that ended.
        exit: how it ended.
        error: its failure, if it failed.

    """

    actor: str
    exit: Exit
    error: ErrorInfo | None = None
