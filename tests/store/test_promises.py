"""Promise operations: create, settle, read and search, against a real database."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from promissory.errors import (
    InvalidInputError,
    PromiseCanceledError,
    PromiseFailedError,
    PromiseNotFoundError,
    StoreError,
)
from promissory.store import PromiseKind, PromiseState, Store, rebuild_error

# -- create ------------------------------------------------------------------------------------


def test_create_makes_a_pending_promise_with_param_and_tags(store: Store) -> None:
    outcome = store.create("order/1", param={"sku": "x", "qty": 2}, tags={"team": "billing"})

    assert outcome.applied is True
    p = outcome.promise
    assert p.id == "order/1"
    assert p.state is PromiseState.PENDING
    assert p.kind is PromiseKind.PROMISE
    assert p.param_as(dict) == {"sku": "x", "qty": 2}
    assert p.value is None
    assert p.tags == {"team": "billing"}
    assert p.timeout_at is None
    assert p.settled_at is None
    assert p.created_at.tzinfo is not None
    assert store.get("order/1") == p


def test_create_without_param_or_tags_stores_null_and_empty_tags(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("bare")

    row = db.execute("SELECT param, tags::text FROM promises WHERE id = 'bare'").fetchone()
    assert row == (None, "{}")
    assert store.get("bare").param_as() is None


def test_create_with_a_timeout_in_seconds_sets_timeout_at_by_the_database_clock(
    store: Store,
) -> None:
    p = store.create("t/secs", timeout=90).promise

    assert p.timeout_at is not None
    assert abs((p.timeout_at - p.created_at) - timedelta(seconds=90)) < timedelta(seconds=1)


def test_create_with_a_float_timeout_keeps_fractions_of_a_second(store: Store) -> None:
    p = store.create("t/float", timeout=30.25).promise

    assert p.timeout_at is not None
    delta = (p.timeout_at - p.created_at).total_seconds()
    assert 30.0 < delta < 30.5


def test_create_with_a_timedelta_timeout(store: Store) -> None:
    p = store.create("t/delta", timeout=timedelta(hours=2)).promise

    assert p.timeout_at is not None
    assert abs((p.timeout_at - p.created_at) - timedelta(hours=2)) < timedelta(seconds=1)


def test_create_with_an_aware_datetime_timeout_keeps_that_instant(store: Store) -> None:
    at = datetime(2999, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

    p = store.create("t/at", timeout=at).promise

    assert p.timeout_at == at
    assert p.state is PromiseState.PENDING


def test_create_with_a_datetime_in_another_zone_means_the_same_instant(store: Store) -> None:
    plus_two = datetime(2999, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))

    p = store.create("t/zone", timeout=plus_two).promise

    assert p.timeout_at == datetime(2999, 6, 1, 12, 0, tzinfo=UTC)


def test_create_timer_makes_a_timer_kind_promise(store: Store) -> None:
    p = store.create("timer/1", timeout=3600, timer=True).promise

    assert p.kind is PromiseKind.TIMER
    assert p.state is PromiseState.PENDING
    assert p.timeout_at is not None


def test_a_timer_needs_a_timeout(store: Store, count_rows: Callable[..., int]) -> None:
    with pytest.raises(InvalidInputError, match="timer needs a timeout"):
        store.create("timer/none", timer=True)
    assert count_rows() == 0


def test_creating_an_existing_id_returns_it_unchanged_and_not_applied(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    first = store.create("dup", param={"v": 1}, tags={"a": "1"}, timeout=3600).promise

    again = store.create("dup", param={"v": 2}, tags={"b": "2"}, timeout=5, timer=True)

    assert again.applied is False
    assert again.promise == first
    row = db.execute("SELECT param->>'v', tags::text, kind FROM promises WHERE id = 'dup'")
    assert row.fetchone() == ("1", '{"a": "1"}', "promise")


def test_creating_an_id_that_was_settled_returns_the_settled_promise(store: Store) -> None:
    store.create("done")
    resolved = store.resolve("done", 7).promise

    again = store.create("done", param="new")

    assert again.applied is False
    assert again.promise == resolved
    assert again.promise.state is PromiseState.RESOLVED


# -- settle ------------------------------------------------------------------------------------


def test_resolve_settles_a_pending_promise_with_its_value(store: Store) -> None:
    created = store.create("r/1").promise

    outcome = store.resolve("r/1", {"answer": 42, "words": ["a", "b"]})

    assert outcome.applied is True
    p = outcome.promise
    assert p.state is PromiseState.RESOLVED
    assert p.value_as(dict) == {"answer": 42, "words": ["a", "b"]}
    assert p.settled_at is not None and p.settled_at >= created.created_at
    assert p.error() is None
    assert store.get("r/1") == p


def test_resolve_without_a_value_stores_null(store: Store, db: psycopg.Connection[Any]) -> None:
    store.create("r/null")

    p = store.resolve("r/null").promise

    assert p.state is PromiseState.RESOLVED
    assert p.value is None
    assert db.execute("SELECT value FROM promises WHERE id = 'r/null'").fetchone() == (None,)


def test_reject_with_an_exception_stores_its_type_message_and_arguments(store: Store) -> None:
    store.create("j/exc")
    try:
        raise ValueError("bad amount", 12)
    except ValueError as exc:
        outcome = store.reject("j/exc", exc)

    assert outcome.applied is True
    p = outcome.promise
    assert p.state is PromiseState.REJECTED
    info = p.error()
    assert info is not None
    assert info.type == "builtins.ValueError"
    assert info.message == "('bad amount', 12)"
    assert info.args == ["bad amount", 12]
    assert info.traceback is not None and "raise ValueError" in info.traceback
    rebuilt = rebuild_error(info)
    assert type(rebuilt) is ValueError
    assert rebuilt.args == ("bad amount", 12)


def test_reject_with_a_string_stores_a_promise_failed_error(store: Store) -> None:
    store.create("j/str")

    p = store.reject("j/str", "the user said no").promise

    info = p.error()
    assert info is not None
    assert info.type == "promissory.errors.PromiseFailedError"
    assert info.message == "the user said no"
    rebuilt = rebuild_error(info)
    assert isinstance(rebuilt, PromiseFailedError)
    assert str(rebuilt) == "the user said no"


def test_reject_without_an_error_says_rejected(store: Store) -> None:
    store.create("j/none")

    info = store.reject("j/none").promise.error()

    assert info is not None
    assert info.message == "rejected"


def test_cancel_settles_as_rejected_canceled_with_the_reason(store: Store) -> None:
    store.create("c/1")

    outcome = store.cancel("c/1", "the user left")

    assert outcome.applied is True
    p = outcome.promise
    assert p.state is PromiseState.REJECTED_CANCELED
    assert p.state.rejected
    info = p.error()
    assert info is not None
    assert info.type == "promissory.errors.PromiseCanceledError"
    assert info.message == "the user left"
    rebuilt = rebuild_error(info)
    assert isinstance(rebuilt, PromiseCanceledError)
    assert rebuilt.promise_id == "c/1"


@pytest.mark.parametrize(
    "settle",
    [
        lambda s, id: s.resolve(id, "second"),
        lambda s, id: s.reject(id, "second"),
        lambda s, id: s.cancel(id, "second"),
    ],
    ids=["resolve", "reject", "cancel"],
)
@pytest.mark.parametrize(
    "first",
    [
        lambda s, id: s.resolve(id, "first"),
        lambda s, id: s.reject(id, "first"),
        lambda s, id: s.cancel(id, "first"),
    ],
    ids=["resolved", "rejected", "canceled"],
)
def test_settling_a_settled_promise_returns_it_unchanged_and_not_applied(
    store: Store,
    db: psycopg.Connection[Any],
    first: Callable[[Store, str], Any],
    settle: Callable[[Store, str], Any],
) -> None:
    store.create("s")
    settled = first(store, "s").promise
    before = db.execute("SELECT state, value, settled_at FROM promises WHERE id = 's'").fetchone()

    again = settle(store, "s")

    assert again.applied is False
    assert again.promise == settled
    after = db.execute("SELECT state, value, settled_at FROM promises WHERE id = 's'").fetchone()
    assert after == before


def test_settle_refuses_pending_and_timedout_as_target_states(store: Store) -> None:
    store.create("st")

    for state in (PromiseState.PENDING, PromiseState.REJECTED_TIMEDOUT):
        with pytest.raises(InvalidInputError, match="cannot be settled as"):
            store.settle("st", state, None)
    assert store.get("st").state is PromiseState.PENDING


# -- get, find, get_many -----------------------------------------------------------------------


def test_get_of_an_unknown_id_raises_promise_not_found(store: Store) -> None:
    with pytest.raises(PromiseNotFoundError, match="no promise has the id 'nope'"):
        store.get("nope")


def test_find_returns_none_for_an_unknown_id_and_the_promise_otherwise(store: Store) -> None:
    created = store.create("f/1").promise

    assert store.find("f/2") is None
    assert store.find("f/1") == created


def test_get_many_returns_the_existing_promises_by_id(store: Store) -> None:
    a = store.create("m/a").promise
    b = store.resolve(store.create("m/b").promise.id, 1).promise

    found = store.get_many(["m/a", "m/b", "m/missing"])

    assert found == {"m/a": a, "m/b": b}
    assert store.get_many([]) == {}


# -- search ------------------------------------------------------------------------------------


def ids_of(store: Store, **filters: Any) -> list[str]:
    return [p.id for p in store.search(limit=1000, **filters).items]


PREFIX_IDS = [
    "a/1",
    "a/1/",
    "a/1/x",
    "a/1/x/y",
    "a/10",
    "a/1x",
    "a/1\u00ff",
    "a/2",
    "a/",
    "a",
    "b/1",
    "p%/1",
    "px/1",
    "p_/1",
    "p\\/1",
    "\u00fc/1",
    "\u00fc/2",
    "\u00fcx",
    "v",
    "\u65e5\u672c/1",
    "\u65e5\u672c/2",
    "\u65e5\u672c\u8a9e",
    "\U0001f600/1",
    "\U0001f600\U0001f601",
    "\U0010ffff/a",
    "\U0010ffff\U0010ffff",
    "\ud7ff/1",
    "\ue000/1",
]


@pytest.mark.parametrize(
    "prefix",
    [
        "a/1",
        "a/1/",
        "a/1/x",
        "a/",
        "a",
        "p%",
        "p_",
        "p\\",
        "\u00fc",
        "\u00fc/",
        "\u65e5\u672c/",
        "\u65e5\u672c",
        "\U0001f600",
        "\U0010ffff",
        "\U0010ffff\U0010ffff",
        "\ud7ff",
        "zzz",
    ],
)
def test_search_by_prefix_finds_exactly_the_ids_that_start_with_it(
    store: Store, prefix: str
) -> None:
    for id in PREFIX_IDS:
        store.create(id)

    found = ids_of(store, prefix=prefix)

    assert sorted(found) == sorted(i for i in PREFIX_IDS if i.startswith(prefix))


def test_search_by_prefix_lists_oldest_first(store: Store) -> None:
    for id in ("run/3", "run/1", "run/2"):
        store.create(id)

    assert ids_of(store, prefix="run/") == ["run/3", "run/1", "run/2"]


def test_search_by_state_reads_overdue_pending_promises_as_timed_out(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("pending")
    store.create("resolved")
    store.resolve("resolved", 1)
    store.create("rejected")
    store.reject("rejected", "no")
    store.create("canceled")
    store.cancel("canceled")
    store.create("overdue", timeout=3600)
    store.create("overdue-timer", timeout=3600, timer=True)
    store.create("later", timeout=3600)
    # Move two timeouts into the past without settling them: only the read projects them.
    db.execute(
        "UPDATE promises SET timeout_at = clock_timestamp() - interval '1 minute' "
        "WHERE id IN ('overdue', 'overdue-timer')"
    )

    assert ids_of(store, state="pending") == ["pending", "later"]
    assert ids_of(store, state=PromiseState.RESOLVED) == ["resolved", "overdue-timer"]
    assert ids_of(store, state="rejected") == ["rejected"]
    assert ids_of(store, state="rejected_canceled") == ["canceled"]
    assert ids_of(store, state="rejected_timedout") == ["overdue"]
    assert ids_of(store, state=["rejected", "rejected_timedout"]) == ["rejected", "overdue"]
    assert db.execute("SELECT count(*) FROM promises WHERE state = 'pending'").fetchone() == (4,)


def test_search_by_an_unknown_state_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="unknown state"):
        store.search(state="done")


def test_search_by_tags_matches_promises_whose_tags_contain_them(store: Store) -> None:
    store.create("t/1", tags={"env": "prod", "team": "a"})
    store.create("t/2", tags={"env": "prod"})
    store.create("t/3", tags={"env": "dev", "team": "a"})
    store.create("t/4")

    assert ids_of(store, tags={"env": "prod"}) == ["t/1", "t/2"]
    assert ids_of(store, tags={"env": "prod", "team": "a"}) == ["t/1"]
    assert ids_of(store, tags={"team": "a"}) == ["t/1", "t/3"]
    assert ids_of(store, tags={"env": "staging"}) == []
    assert ids_of(store, tags={}) == ["t/1", "t/2", "t/3", "t/4"]


def test_search_by_kind(store: Store) -> None:
    store.create("k/promise")
    store.create("k/timer", timeout=3600, timer=True)

    assert ids_of(store, kind="timer") == ["k/timer"]
    assert ids_of(store, kind=PromiseKind.PROMISE) == ["k/promise"]
    assert ids_of(store, kind="message") == []


def test_search_by_an_unknown_kind_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="kind"):
        store.search(kind="bogus")


def test_search_by_creation_time_takes_after_inclusive_and_before_exclusive(
    store: Store,
) -> None:
    a = store.create("when/a").promise
    b = store.create("when/b").promise
    c = store.create("when/c").promise
    assert a.created_at < b.created_at < c.created_at

    assert ids_of(store, created_after=b.created_at) == ["when/b", "when/c"]
    assert ids_of(store, created_before=b.created_at) == ["when/a"]
    assert ids_of(store, created_after=a.created_at, created_before=c.created_at) == [
        "when/a",
        "when/b",
    ]


def test_search_combines_filters(store: Store) -> None:
    store.create("x/1", tags={"k": "v"})
    store.create("x/2", tags={"k": "v"})
    store.resolve("x/2")
    store.create("y/1", tags={"k": "v"})

    assert ids_of(store, prefix="x/", state="pending", tags={"k": "v"}) == ["x/1"]


def test_search_pages_through_every_match_with_a_cursor(store: Store) -> None:
    ids = [f"page/{i:02d}" for i in range(25)]
    for id in ids:
        store.create(id)
    store.create("other")

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.search(prefix="page/", limit=10, cursor=cursor)
        pages += 1
        seen.extend(p.id for p in page.items)
        if page.cursor is None:
            break
        assert len(page.items) == 10
        cursor = page.cursor

    assert pages == 3
    assert seen == ids


def test_search_gives_no_cursor_when_the_last_page_is_exactly_full(store: Store) -> None:
    for i in range(20):
        store.create(f"full/{i:02d}")

    first = store.search(prefix="full/", limit=10)
    second = store.search(prefix="full/", limit=10, cursor=first.cursor)

    assert first.cursor is not None
    assert len(second.items) == 10
    assert second.cursor is None


def test_search_with_a_bad_cursor_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="not a search cursor"):
        store.search(cursor="not-a-cursor")


def test_search_with_a_limit_below_one_is_invalid_input(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        store.search(limit=0)


def test_a_closed_store_refuses_reads_and_writes_at_once(dsn: str) -> None:
    store = Store(dsn, reconnect_timeout=20)
    store.create("before")
    store.close()
    store.close()  # idempotent

    start = time.monotonic()
    with pytest.raises(StoreError, match="closed"):
        store.get("before")
    with pytest.raises(StoreError, match="closed"):
        store.create("after")
    with pytest.raises(StoreError, match="closed"):
        store.wait("before", timeout=5)
    assert time.monotonic() - start < 2


def test_a_mailbox_read_with_its_head_journal_is_the_two_reads_in_one(store: Store) -> None:
    # ``mailbox_and_head``: the mailbox as ``mailbox`` reads it, and the head message's
    # journal as ``journal`` reads it (its direct steps, no deeper ones), in one query.
    with psycopg.connect(store.dsn, autocommit=True) as db:
        db.execute("INSERT INTO actors (id, kind) VALUES ('a', 'K')")
        for id in ("a/m-1", "a/m-2"):
            db.execute(
                "INSERT INTO promises (id, kind, recipient) VALUES (%s, 'message', 'a')", (id,)
            )
        for id in ("a/m-1/1", "a/m-1/2", "a/m-1/1/x", "a/m-2/1"):
            db.execute("INSERT INTO promises (id, kind) VALUES (%s, 'step')", (id,))

    box, head = store.mailbox_and_head("a")

    assert box == store.mailbox("a")
    assert [e.promise.id for e in box] == ["a/m-1", "a/m-2"]
    assert head is not None
    assert head == store.journal("a/m-1")
    assert sorted(p.id for p in head.records) == ["a/m-1", "a/m-1/1", "a/m-1/2"]
    assert store.mailbox_and_head("nobody") == ([], None)


def test_an_ending_view_is_the_actor_row_its_subtree_and_its_cleanups_in_one(
    store: Store,
) -> None:
    # ``ending_view``: what ``actor_row``, ``subtree`` and ``cleanup_pending`` read apart.
    with psycopg.connect(store.dsn, autocommit=True) as db:
        for id, parent, status in (
            ("r", None, "running"),
            ("r/a", "r", "running"),
            ("r/a/x", "r/a", "restarting"),
            ("r/b", "r", "stopped"),
            ("r/c", "r", "running"),
            ("lone", None, "running"),
        ):
            db.execute(
                "INSERT INTO actors (id, parent, kind, status) VALUES (%s, %s, 'K', %s)",
                (id, parent, status),
            )
        # A canceled message of "r" still marked for its cleanup replay.
        db.execute(
            "INSERT INTO promises (id, kind, recipient, state, settled_at, awaiting) "
            "VALUES ('r/m-1', 'message', 'r', 'rejected_canceled', now(), '{}')"
        )

    for actor in ("r", "r/a", "lone", "nobody"):
        view = store.ending_view(actor)
        assert view.record == store.actor_row(actor)
        assert view.subtree == store.subtree(actor)
        assert view.cleanup_pending == store.cleanup_pending(actor)
    assert [a.id for a in store.ending_view("r").subtree] == ["r/a/x", "r/c", "r/a"]
    assert store.ending_view("r").cleanup_pending
    assert not store.ending_view("lone").cleanup_pending
    assert store.ending_view("nobody").record is None
