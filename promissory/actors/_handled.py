"""How a handler's run ended, as the activation acts on it: one pure decision.

``classify`` turns what the run raised (or ``None``: it returned), whether its message was
canceled meanwhile, and the actor's ``reply_errors`` into one ``Handled`` value; the activation
then does the one thing that value names. The order of the rules is the contract: a signal
(canceled, suspended) or a fence wins over anything else, a database fault is never the
handler's failure, and a failure while cleaning up after a cancel is part of the cancel.
"""

from __future__ import annotations

import enum

from ..errors import FencedError
from ..store import STORE_FAULTS
from ._cancel import Canceled
from ._signals import Suspend

__all__ = ["Handled", "classify"]


class Handled(enum.Enum):
    """What the activation does once a handler's run ended."""

    REPLY = "reply"
    """It returned: settle the message with the reply and keep the new state, together."""
    CANCELED = "canceled"
    """The message was canceled (or timed out) and its handler is done, whether it returned,
    raised ``Canceled``, or failed while cleaning up: the state is not kept, its mark cleared."""
    SUSPEND = "suspend"
    """It waits on promises still pending: record what, and give the thread back."""
    FENCED = "fenced"
    """A newer activation holds the actor: end here, keeping nothing."""
    STORE_FAULT = "store_fault"
    """The database is away or busy: not the handler's failure. The activation ends with the
    message pending (the error is raised on), and the node hands it to a new one later."""
    REJECT = "reject"
    """It raised one of the actor's ``reply_errors``: reject the message with it, carry on."""
    CRASH = "crash"
    """Any other failure: the actor crashed, for its supervisor to decide on."""


def classify(
    error: BaseException | None,
    *,
    canceled: bool,
    reply_errors: tuple[type[BaseException], ...] = (),
) -> Handled:
    """What to do after a handler's run that raised ``error`` (``None``: it returned).

    ``canceled``: whether its message was settled by someone else (canceled, timed out) by the
    time the run ended. ``reply_errors``: the exception types the actor answers with.
    """
    if error is None:
        return Handled.CANCELED if canceled else Handled.REPLY
    if isinstance(error, Canceled):
        return Handled.CANCELED
    if isinstance(error, Suspend):
        return Handled.SUSPEND
    if isinstance(error, FencedError):
        return Handled.FENCED
    if isinstance(error, STORE_FAULTS):
        return Handled.STORE_FAULT
    if canceled:
        return Handled.CANCELED
    if isinstance(error, reply_errors) and isinstance(error, Exception):
        return Handled.REJECT
    return Handled.CRASH
