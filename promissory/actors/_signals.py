"""Control-flow signals: raised through user code, never caught by ``except Exception``."""

from __future__ import annotations


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
