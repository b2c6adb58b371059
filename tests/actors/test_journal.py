"""Replay matching on its own: fingerprints, step ids, and what a journal says about each
operation a handler asks for (no database; the records are made here)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from promissory.actors._journal import (
    Journal,
    StepKind,
    callable_name,
    check_fingerprint,
    fingerprint,
)
from promissory.errors import NondeterminismError
from promissory.store import Promise, PromiseKind, PromiseState

MESSAGE = "bank/m/7"
DEP = "4a89d45ddf06"
"""The hash of ``{"n": 1}`` in a fingerprint."""


def record(id: str, fp: str | None, state: PromiseState = PromiseState.RESOLVED) -> Promise:
    """A kept step as the store returns it."""
    settled = None if state is PromiseState.PENDING else datetime(2024, 1, 1, tzinfo=UTC)
    return Promise(
        id=id,
        state=state,
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        settled_at=settled,
        kind=PromiseKind.STEP,
        fingerprint=fp,
    )


# -- fingerprints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("made", "kept"),
    [
        # The exact text journals hold: changing any of these makes every kept journal fail.
        (lambda: fingerprint(StepKind.SLEEP), "sleep"),
        (lambda: fingerprint(StepKind.RETRY), "retry"),
        (lambda: fingerprint(StepKind.NOW), "now"),
        (lambda: fingerprint(StepKind.PROMISE), "promise"),
        (lambda: fingerprint(StepKind.PROMISE, "approval/1"), "promise:approval/1"),
        (lambda: fingerprint(StepKind.WATCH, "bank"), "watch:bank"),
        (lambda: fingerprint(StepKind.SPAWN, "app:Child:bank/c"), "spawn:app:Child:bank/c"),
        (lambda: fingerprint(StepKind.STEP, "charge", [12, "eur"]), "step:charge:2d2e0638e1aa"),
        (lambda: fingerprint(StepKind.CALL, "bank:Deposit", {"n": 1}), "call:bank:Deposit:" + DEP),
        (lambda: fingerprint(StepKind.SEND, "bank:Deposit", {"n": 1}), "send:bank:Deposit:" + DEP),
    ],
)
def test_a_fingerprint_is_the_text_kept_journals_hold(made: Any, kept: str) -> None:
    assert made() == kept


def test_a_fingerprint_hashes_arguments_in_key_order_independent_form() -> None:
    assert fingerprint(StepKind.STEP, "f", {"a": 1, "b": 2}) == fingerprint(
        StepKind.STEP, "f", {"b": 2, "a": 1}
    )


def test_a_fingerprint_differs_when_the_arguments_do() -> None:
    assert fingerprint(StepKind.STEP, "f", [1]) != fingerprint(StepKind.STEP, "f", [2])


def test_an_argument_that_does_not_encode_counts_by_its_type_name_only() -> None:
    # A lock differs between runs; a replay must not fail because of it.
    first = fingerprint(StepKind.STEP, "f", [threading.Lock(), 1])
    second = fingerprint(StepKind.STEP, "f", [threading.Lock(), 1])
    assert first == second
    assert first != fingerprint(StepKind.STEP, "f", [threading.Lock(), 2])


def test_a_callable_is_named_by_its_module_and_qualified_name() -> None:
    assert callable_name(record) == f"{__name__}.record"
    assert callable_name(str.upper) == "?.str.upper"  # a method descriptor has no module


# -- step ids and lookups ----------------------------------------------------------------------


def test_each_operation_gets_the_next_position_under_the_message() -> None:
    journal = Journal(MESSAGE)
    assert [journal.next(), journal.next(), journal.next()] == [
        f"{MESSAGE}/1",
        f"{MESSAGE}/2",
        f"{MESSAGE}/3",
    ]


def test_an_operation_with_no_record_runs_for_real() -> None:
    journal = Journal(MESSAGE, [record(f"{MESSAGE}/1", "sleep")])
    journal.next()
    assert journal.lookup(journal.next(), "sleep") is None


def test_an_operation_asking_what_was_kept_replays_its_record() -> None:
    kept = record(f"{MESSAGE}/1", "step:charge:2d2e0638e1aa")
    journal = Journal(MESSAGE, [kept])
    assert journal.lookup(journal.next(), "step:charge:2d2e0638e1aa") is kept


def test_an_operation_asking_something_else_fails_naming_the_step() -> None:
    journal = Journal(MESSAGE, [record(f"{MESSAGE}/1", "step:charge:2d2e0638e1aa")])
    with pytest.raises(NondeterminismError) as raised:
        journal.lookup(journal.next(), "step:refund:2d2e0638e1aa")
    assert raised.value.step_id == f"{MESSAGE}/1"
    assert "step:refund" in str(raised.value) and "step:charge" in str(raised.value)


def test_a_record_without_a_fingerprint_matches_anything() -> None:
    # Rows written before fingerprints were kept, or by hand.
    kept = record(f"{MESSAGE}/1", None)
    journal = Journal(MESSAGE, [kept])
    assert journal.lookup(journal.next(), "sleep") is kept


def test_check_fingerprint_passes_equal_or_missing_and_refuses_different() -> None:
    check_fingerprint("s/1", None, "sleep")
    check_fingerprint("s/1", "sleep", "sleep")
    with pytest.raises(NondeterminismError):
        check_fingerprint("s/1", "sleep", "promise")


def test_a_record_kept_during_the_run_is_found_by_a_later_lookup() -> None:
    journal = Journal(MESSAGE)
    sid = journal.next()
    kept = record(sid, "sleep")
    journal.keep(kept)
    assert journal.get(sid) is kept
    assert len(journal) == 1


def test_a_journal_can_be_made_from_a_mapping_of_records() -> None:
    kept = record(f"{MESSAGE}/1", "sleep")
    assert Journal(MESSAGE, {kept.id: kept}).get(kept.id) is kept


# -- attempts after a crash at a step ----------------------------------------------------------


def test_a_step_that_crashed_the_actor_is_tried_again_under_the_next_attempt_id() -> None:
    base = f"{MESSAGE}/1"
    failed = record(base, "step:charge", PromiseState.REJECTED)
    journal = Journal(MESSAGE, [failed], retry_step=base)
    assert journal.attempt(base, "step:charge") == (f"{base}~1", None)


def test_a_rejected_step_that_did_not_crash_the_actor_replays_its_failure() -> None:
    base = f"{MESSAGE}/1"
    failed = record(base, "step:charge", PromiseState.REJECTED)
    journal = Journal(MESSAGE, [failed], retry_step=None)
    assert journal.attempt(base, "step:charge") == (base, failed)


def test_later_replays_follow_the_newest_attempt() -> None:
    base = f"{MESSAGE}/1"
    first = record(base, "step:charge", PromiseState.REJECTED)
    second = record(f"{base}~1", "step:charge", PromiseState.REJECTED)
    third = record(f"{base}~2", "step:charge")
    journal = Journal(MESSAGE, [first, second, third], retry_step=f"{base}~1")
    assert journal.attempt(base, "step:charge") == (f"{base}~2", third)


def test_the_newest_attempt_that_crashed_the_actor_gets_one_more() -> None:
    base = f"{MESSAGE}/1"
    first = record(base, "step:charge", PromiseState.REJECTED)
    second = record(f"{base}~1", "step:charge", PromiseState.REJECTED)
    journal = Journal(MESSAGE, [first, second], retry_step=f"{base}~1")
    assert journal.attempt(base, "step:charge") == (f"{base}~2", None)


def test_an_attempt_asking_something_else_fails_naming_the_newest_attempt() -> None:
    base = f"{MESSAGE}/1"
    journal = Journal(
        MESSAGE,
        [record(base, "step:charge", PromiseState.REJECTED), record(f"{base}~1", "step:charge")],
    )
    with pytest.raises(NondeterminismError) as raised:
        journal.attempt(base, "step:refund")
    assert raised.value.step_id == f"{base}~1"


def test_a_step_never_run_has_its_base_id_and_no_record() -> None:
    assert Journal(MESSAGE).attempt(f"{MESSAGE}/4", "sleep") == (f"{MESSAGE}/4", None)
