"""Many threads at once: one winner per id, group commit, and a bad write failing only itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from promissory.errors import StoreError
from promissory.store import Outcome, PromiseKind, PromiseState, Store
from promissory.store._handoff import WriteFuture
from promissory.store._ops import Op
from promissory.store._promises import create_op

THREADS = 24


def all_at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` for ``i`` in ``range(n)`` on ``n`` threads released together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait(10)
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


@pytest.mark.timeout(60)
def test_threads_creating_the_same_id_at_once_make_exactly_one_promise(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    for round in range(5):
        id = f"same/{round}"

        def create(i: int, id: str = id) -> Outcome:
            return store.create(id, param={"by": i}, tags={"t": str(i)})

        outcomes: list[Outcome] = all_at_once(THREADS, create)

        winners = [o for o in outcomes if o.applied]
        assert len(winners) == 1
        assert all(o.promise == winners[0].promise for o in outcomes)
        by = winners[0].promise.param_as(dict)["by"]
        row = db.execute("SELECT param->>'by', tags->>'t' FROM promises WHERE id = %s", (id,))
        assert row.fetchall() == [(str(by), str(by))]


@pytest.mark.timeout(60)
def test_threads_settling_the_same_promise_at_once_agree_on_one_winner(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    for round in range(5):
        id = f"race/{round}"
        store.create(id)

        def settle(i: int, id: str = id) -> Outcome:
            if i % 3 == 0:
                return store.resolve(id, {"by": i})
            if i % 3 == 1:
                return store.reject(id, f"by {i}")
            return store.cancel(id, f"by {i}")

        outcomes: list[Outcome] = all_at_once(THREADS, settle)

        winners = [o for o in outcomes if o.applied]
        assert len(winners) == 1
        winner = winners[0].promise
        assert winner.state.settled
        assert all(o.promise == winner for o in outcomes)
        stored = db.execute("SELECT state, value FROM promises WHERE id = %s", (id,)).fetchone()
        assert stored is not None
        assert stored[0] == winner.state.value
        assert stored[1] == winner.value_as()
        assert store.get(id) == winner


@pytest.mark.timeout(60)
def test_concurrent_writers_share_transactions(
    store: Store, count_rows: Callable[..., int]
) -> None:
    writers, per_writer = 32, 25
    batches_before, ops_before = store.writer_stats

    def work(i: int) -> None:
        for j in range(per_writer):
            id = f"gc/{i}/{j}"
            assert store.create(id, param=j).applied
            assert store.resolve(id, j).applied

    all_at_once(writers, work)

    batches, ops = store.writer_stats
    batches -= batches_before
    ops -= ops_before
    assert ops == writers * per_writer * 2
    assert batches < ops / 2, f"{batches} batches for {ops} ops"
    assert count_rows("state = 'resolved'") == writers * per_writer


def create_op_for(id: str) -> Op:
    return create_op(id, param=None, tags="{}", secs=None, at=None, kind=PromiseKind.PROMISE)


def submit_around(
    store: Store, bad: Op, n: int = 200
) -> tuple[list[WriteFuture[Any]], WriteFuture[Any]]:
    """Submit ``n`` good creates with ``bad`` in the middle, quickly, so they share batches."""
    good: list[WriteFuture[Any]] = []
    bad_future: WriteFuture[Any] | None = None
    for i in range(n):
        if i == n // 2:
            bad_future = store.submit(bad)
        good.append(store.submit(create_op_for(f"good/{i}")))
    assert bad_future is not None
    return good, bad_future


@pytest.mark.timeout(60)
def test_a_write_the_database_refuses_fails_only_its_own_caller(
    store: Store, count_rows: Callable[..., int]
) -> None:
    refused = Op(
        [("INSERT INTO promises (id, state) VALUES ('refused', 'no-such-state')", ())],
        lambda rows, xid: None,
    )

    good, bad = submit_around(store, refused)

    with pytest.raises(StoreError, match="refused a write"):
        bad.result(30)
    assert all(f.result(30).applied for f in good)
    assert count_rows() == len(good)
    assert count_rows("id = 'refused'") == 0
    batches, ops = store.writer_stats
    assert ops == len(good)


@pytest.mark.timeout(60)
def test_a_write_the_driver_cannot_send_fails_only_itself_and_commits_nothing_of_it(
    store: Store, count_rows: Callable[..., int]
) -> None:
    # A lone surrogate cannot be encoded as UTF-8: the driver fails while the batch is being
    # sent, after the writes before it in the batch went out. Those must be committed once
    # (and reported as applied), the bad op not at all, and nothing left for a later batch.
    unsendable = create_op_for("bad\ud800")

    good, bad = submit_around(store, unsendable)

    with pytest.raises(StoreError, match="could not send a write"):
        bad.result(30)
    assert all(f.result(30).applied for f in good)
    assert store.create("after").applied
    assert count_rows() == len(good) + 1


@pytest.mark.timeout(60)
def test_a_result_that_cannot_be_read_fails_only_its_op_and_keeps_the_batch_committed(
    store: Store, db: psycopg.Connection[Any], count_rows: Callable[..., int]
) -> None:
    # A timeout Python cannot represent, written by hand: settling it commits, but reading
    # the row back fails. The other ops of that batch committed with it and must say so.
    store.create("infinite")
    db.execute("UPDATE promises SET timeout_at = 'infinity' WHERE id = 'infinite'")
    from promissory.store._promises import settle_op

    unreadable = settle_op("infinite", PromiseState.RESOLVED, '"v"')

    good, bad = submit_around(store, unreadable)

    with pytest.raises(StoreError, match="committed but its result could not be read"):
        bad.result(30)
    assert all(f.result(30).applied for f in good)
    assert count_rows("id LIKE 'good/%'") == len(good)
    assert db.execute("SELECT state FROM promises WHERE id = 'infinite'").fetchone() == (
        "resolved",
    )
