"""Timeouts: timeout always wins, by the database's clock, before and after any sweep."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from promissory.store import PromiseKind, PromiseState, Store


def make_overdue(db: psycopg.Connection[Any], id: str, seconds_ago: float = 60) -> datetime:
    """Move a pending promise's timeout into the past without settling it; return the new one."""
    row = db.execute(
        "UPDATE promises SET timeout_at = clock_timestamp() - %s * interval '1 second' "
        "WHERE id = %s AND state = 'pending' RETURNING timeout_at",
        (seconds_ago, id),
    ).fetchone()
    assert row is not None, f"{id} is not pending"
    return row[0]  # type: ignore[no-any-return]


def raw_row(db: psycopg.Connection[Any], id: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT state, settled_at, timeout_at, value FROM promises WHERE id = %s", (id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_an_overdue_pending_promise_reads_as_timed_out_before_any_sweep(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("late", timeout=3600)
    due = make_overdue(db, "late")

    p = store.get("late")

    assert p.state is PromiseState.REJECTED_TIMEDOUT
    assert p.settled_at == due == p.timeout_at
    assert p.value is None
    assert raw_row(db, "late")[0] == "pending"  # nothing was written by the read


def test_an_overdue_timer_reads_as_resolved(store: Store, db: psycopg.Connection[Any]) -> None:
    store.create("tick", timeout=3600, timer=True)
    due = make_overdue(db, "tick")

    p = store.get("tick")

    assert p.state is PromiseState.RESOLVED
    assert p.kind is PromiseKind.TIMER
    assert p.settled_at == due


def test_every_read_path_projects_the_timeout(store: Store, db: psycopg.Connection[Any]) -> None:
    store.create("late", timeout=3600)
    make_overdue(db, "late")

    assert store.find("late").state is PromiseState.REJECTED_TIMEDOUT  # type: ignore[union-attr]
    assert store.get_many(["late"])["late"].state is PromiseState.REJECTED_TIMEDOUT
    assert store.search(prefix="late").items[0].state is PromiseState.REJECTED_TIMEDOUT
    again = store.create("late")
    assert again.applied is False
    assert again.promise.state is PromiseState.REJECTED_TIMEDOUT


@pytest.mark.parametrize(
    "settle",
    [lambda s: s.resolve("late", "v"), lambda s: s.reject("late", "e"), lambda s: s.cancel("late")],
    ids=["resolve", "reject", "cancel"],
)
def test_settling_after_the_timeout_returns_the_timed_out_promise_and_persists_it(
    store: Store, db: psycopg.Connection[Any], settle: Any
) -> None:
    store.create("late", timeout=3600)
    due = make_overdue(db, "late")

    outcome = settle(store)

    assert outcome.applied is False
    assert outcome.promise.state is PromiseState.REJECTED_TIMEDOUT
    assert outcome.promise.settled_at == due
    assert outcome.promise.value is None
    assert raw_row(db, "late") == ("rejected_timedout", due, due, None)


def test_resolving_a_timer_after_its_timeout_keeps_it_resolved_without_the_value(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("tick", timeout=3600, timer=True)
    due = make_overdue(db, "tick")

    outcome = store.resolve("tick", "too late")

    assert outcome.applied is False
    assert outcome.promise.state is PromiseState.RESOLVED
    assert raw_row(db, "tick") == ("resolved", due, due, None)


def test_settling_before_the_timeout_wins(store: Store, db: psycopg.Connection[Any]) -> None:
    store.create("early", timeout=3600)

    outcome = store.resolve("early", 1)

    assert outcome.applied is True
    assert outcome.promise.state is PromiseState.RESOLVED
    assert raw_row(db, "early")[0] == "resolved"


def test_creating_with_a_past_datetime_creates_it_already_timed_out(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    past = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)

    outcome = store.create("past", timeout=past)

    assert outcome.applied is True
    p = outcome.promise
    assert p.state is PromiseState.REJECTED_TIMEDOUT
    assert p.timeout_at == past
    assert p.settled_at == past
    assert raw_row(db, "past") == ("rejected_timedout", past, past, None)


def test_creating_a_timer_with_a_past_datetime_creates_it_resolved(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)

    p = store.create("past-timer", timeout=past, timer=True).promise

    assert p.state is PromiseState.RESOLVED
    assert raw_row(db, "past-timer")[0] == "resolved"


def test_creating_with_a_zero_timeout_creates_it_already_timed_out(store: Store) -> None:
    p = store.create("zero", timeout=0).promise

    assert p.state is PromiseState.REJECTED_TIMEDOUT
    assert p.settled_at == p.timeout_at


def test_sweep_settles_the_overdue_promises_in_due_order_and_only_those(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    for id in ("a", "b", "c", "not-due", "settled"):
        store.create(id, timeout=3600)
    store.create("timer", timeout=3600, timer=True)
    store.create("no-timeout")
    store.resolve("settled", 1)
    # Due order differs from creation order.
    due = {
        "a": make_overdue(db, "a", 10),
        "b": make_overdue(db, "b", 30),
        "c": make_overdue(db, "c", 20),
        "timer": make_overdue(db, "timer", 40),
    }
    settled_events: list[str] = []
    store.subscribe("settled", [""], lambda kind, key, resync: settled_events.append(key))

    swept = store.sweep_timeouts()

    assert [p.id for p in swept] == ["timer", "b", "c", "a"]
    assert [p.state for p in swept] == [PromiseState.RESOLVED] + [
        PromiseState.REJECTED_TIMEDOUT
    ] * 3
    for p in swept:
        assert p.settled_at == due[p.id]
        assert raw_row(db, p.id)[:2] == (p.state.value, due[p.id])
    assert raw_row(db, "not-due")[0] == "pending"
    assert raw_row(db, "no-timeout")[0] == "pending"
    assert raw_row(db, "settled")[0] == "resolved"
    assert set(settled_events) >= {"a", "b", "c", "timer"}
    assert store.sweep_timeouts() == []


def test_sweep_takes_at_most_limit_promises_earliest_due_first(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    for i in range(5):
        store.create(f"s/{i}", timeout=3600)
        make_overdue(db, f"s/{i}", 10 + i)

    first = store.sweep_timeouts(limit=2)
    rest = store.sweep_timeouts(limit=10)

    assert [p.id for p in first] == ["s/4", "s/3"]
    assert [p.id for p in rest] == ["s/2", "s/1", "s/0"]


def test_seconds_to_next_timeout_follows_the_earliest_pending_timeout(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    assert store.seconds_to_next_timeout() is None
    store.create("no-timeout")
    assert store.seconds_to_next_timeout() is None

    store.create("hour", timeout=3600)
    store.create("minute", timeout=60)
    left = store.seconds_to_next_timeout()
    assert left is not None and 55 < left <= 60

    store.resolve("minute")
    left = store.seconds_to_next_timeout()
    assert left is not None and 3500 < left <= 3600

    make_overdue(db, "hour", 5)
    left = store.seconds_to_next_timeout()
    assert left is not None and -6 < left <= -5

    store.sweep_timeouts()
    assert store.seconds_to_next_timeout() is None


@pytest.mark.timeout(30)
def test_wait_returns_at_the_promises_own_timeout_with_nobody_settling_it(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    p = store.create("self-timing", timeout=0.3).promise
    assert p.timeout_at is not None
    start = time.monotonic()

    waited = store.wait("self-timing", timeout=10)

    elapsed = time.monotonic() - start
    assert waited.state is PromiseState.REJECTED_TIMEDOUT
    assert waited.settled_at == p.timeout_at
    assert 0.1 < elapsed < 5
    assert raw_row(db, "self-timing")[0] == "pending"


@pytest.mark.timeout(30)
def test_wait_on_a_timer_returns_it_resolved_at_its_time(store: Store) -> None:
    store.create("nap", timeout=timedelta(milliseconds=200), timer=True)

    p = store.wait("nap", timeout=10)

    assert p.state is PromiseState.RESOLVED
    assert p.settled_at == p.timeout_at


@pytest.mark.timeout(30)
def test_many_waiters_each_wake_at_their_own_timeout(store: Store) -> None:
    timeouts = {f"w/{i}": 0.1 + 0.1 * i for i in range(5)}
    for id, secs in timeouts.items():
        store.create(id, timeout=secs)
    results: dict[str, PromiseState] = {}

    def wait(id: str) -> None:
        results[id] = store.wait(id, timeout=10).state

    threads = [threading.Thread(target=wait, args=(id,)) for id in timeouts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)

    assert results == {id: PromiseState.REJECTED_TIMEDOUT for id in timeouts}
