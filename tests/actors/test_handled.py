"""How a handler's run ended, classified (``promissory.actors._handled``): the whole grid of
(what it raised, whether its message was canceled meanwhile), one rule per row."""

from __future__ import annotations

import pytest

from promissory.actors import Canceled
from promissory.actors._handled import Handled, classify
from promissory.actors._signals import Suspend
from promissory.errors import (
    FencedError,
    PromissoryError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
)


class Declined(Exception):
    """An error the actor answers with (one of its ``reply_errors``)."""


class Boom(Exception):
    """Any other failure."""


REPLY_ERRORS = (Declined,)

CASES = [
    # (what the run raised, canceled meanwhile, what the activation does)
    (None, False, Handled.REPLY),
    (None, True, Handled.CANCELED),  # returned, but its message was settled meanwhile
    (Canceled("stop"), False, Handled.CANCELED),
    (Canceled("stop"), True, Handled.CANCELED),
    (Suspend(["a/1"]), False, Handled.SUSPEND),
    (Suspend(["a/1"]), True, Handled.SUSPEND),  # waits even while cleaning up
    (FencedError("newer"), False, Handled.FENCED),
    (FencedError("newer"), True, Handled.FENCED),
    (StoreUnavailableError("away"), False, Handled.STORE_FAULT),
    (StoreBusyError("busy"), True, Handled.STORE_FAULT),  # never taken for the cancel's end
    (Declined("no"), False, Handled.REJECT),
    (Declined("no"), True, Handled.CANCELED),  # failed while cleaning up: part of the cancel
    (Boom("x"), False, Handled.CRASH),
    (Boom("x"), True, Handled.CANCELED),
    (StoreError("refused"), False, Handled.CRASH),  # a store error that is no fault: a crash
    (PromissoryError("x"), False, Handled.CRASH),
    (KeyboardInterrupt(), False, Handled.CRASH),  # not an Exception: never a reply
]


@pytest.mark.parametrize(("error", "canceled", "handled"), CASES)
def test_a_run_is_classified_by_what_it_raised_and_whether_it_was_canceled(
    error: BaseException | None, canceled: bool, handled: Handled
) -> None:
    assert classify(error, canceled=canceled, reply_errors=REPLY_ERRORS) is handled


def test_every_way_a_run_can_end_is_reached_by_some_case() -> None:
    assert {case[2] for case in CASES} == set(Handled)


def test_a_reply_error_that_is_not_an_exception_is_a_crash() -> None:
    class Halt(BaseException):
        pass

    assert classify(Halt(), canceled=False, reply_errors=(Halt,)) is Handled.CRASH


def test_without_reply_errors_every_failure_is_a_crash() -> None:
    assert classify(Declined("no"), canceled=False) is Handled.CRASH
