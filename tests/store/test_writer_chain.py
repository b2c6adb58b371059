"""The writer sends the next batch before it tells the last one's callers (``Writer._write``'s
``then``): what each batch's callers hear, whatever happens to the batch after theirs.

Each test queues a second op from the first one's ``meanwhile`` (called once the first batch
is on its way), so it waits when the first batch's answers come back, and the writer chains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from promissory._crashpoints import arm_drop
from promissory.errors import StoreError
from promissory.store import PromiseKind, Store
from promissory.store._ops import Op
from promissory.store._promises import create_op


def create(id: str) -> Op:
    return create_op(id, param=None, tags="{}", secs=None, at=None, kind=PromiseKind.PROMISE)


def chained(store: Store, first: Op, second: Op) -> list[bool]:
    """Queue ``second`` while ``first``'s batch is on its way; then submit ``first``.
    Returns, once ``second`` is on its way, whether ``first``'s caller had been told.
    """
    told: list[bool] = []

    def queue_second() -> None:
        store.submit(second)

    def look() -> None:
        told.append(first.future.done())

    first.meanwhile = queue_second
    second.meanwhile = look
    store.submit(first)
    return told


@pytest.fixture
def no_drop() -> Iterator[None]:
    yield
    arm_drop(None)


@pytest.mark.timeout(60)
def test_the_next_batch_is_sent_before_the_last_ones_callers_are_told(
    store: Store, count_rows: Callable[..., int]
) -> None:
    first, second = create("first"), create("second")
    batches_before = store.writer_stats[0]

    told = chained(store, first, second)

    assert first.future.result(30).applied
    assert second.future.result(30).applied
    assert told == [False]  # the second batch went out before the first's caller heard
    assert store.writer_stats[0] - batches_before == 2
    assert count_rows("id IN ('first', 'second')") == 2


@pytest.mark.timeout(60)
def test_a_refused_batch_after_a_committed_one_fails_only_its_own_callers(
    store: Store, count_rows: Callable[..., int], caplog: pytest.LogCaptureFixture
) -> None:
    first = create("first")
    refused = Op(
        [("INSERT INTO promises (id, state) VALUES ('refused', 'no-such-state')", ())],
        lambda rows, xid: None,
    )

    told = chained(store, first, refused)

    assert first.future.result(30).applied
    with pytest.raises(StoreError, match="refused a write"):
        refused.future.result(30)
    assert told == [False]
    assert count_rows("id = 'first'") == 1
    assert count_rows("id = 'refused'") == 0
    assert "failed to tell" not in caplog.text
    assert store.create("after").applied


@pytest.mark.timeout(60)
def test_a_batch_the_driver_cannot_send_after_a_committed_one_keeps_that_one(
    store: Store, count_rows: Callable[..., int], caplog: pytest.LogCaptureFixture
) -> None:
    # The unsendable op makes the writer drop its connection (the transaction it had begun is
    # rolled back): the batch before it committed, and its caller hears so, once.
    first = create("first")
    unsendable = create("bad\ud800")

    told = chained(store, first, unsendable)

    assert first.future.result(30).applied
    with pytest.raises(StoreError, match="could not send a write"):
        unsendable.future.result(30)
    assert told == []  # never on its way
    assert count_rows("id = 'first'") == 1
    assert count_rows() == 1
    assert "failed to tell" not in caplog.text
    assert store.create("after").applied


@pytest.mark.timeout(60)
def test_a_lost_commit_answer_in_the_next_batch_leaves_both_batches_told_once(
    store: Store, count_rows: Callable[..., int], caplog: pytest.LogCaptureFixture, no_drop: None
) -> None:
    # The connection is cut once the second batch's COMMIT is sent: the first batch's caller
    # was told before, and the second's outcome is learned from the database.
    caplog.set_level(logging.INFO, logger="promissory.store")
    first, second = create("first"), create("second")
    second.label = "chained"
    arm_drop("chained:1")

    told = chained(store, first, second)

    assert first.future.result(30).applied
    assert second.future.result(30).applied
    assert told == [False]
    assert count_rows("id IN ('first', 'second')") == 2
    assert "failed to tell" not in caplog.text
    assert store.create("after").applied


@pytest.mark.timeout(60)
def test_a_busy_writer_keeps_chaining_and_every_caller_hears_once(
    store: Store, count_rows: Callable[..., int], caplog: pytest.LogCaptureFixture
) -> None:
    # Each batch's meanwhile queues the next op: ten batches in a row, none waiting for its
    # caller to be told before the next goes out.
    ops = [create(f"p/{i}") for i in range(10)]
    told: list[bool] = []
    for i, op in enumerate(ops):

        def on_its_way(i: int = i) -> None:
            if i > 0:
                told.append(ops[i - 1].future.done())
            if i + 1 < len(ops):
                store.submit(ops[i + 1])

        op.meanwhile = on_its_way
    store.submit(ops[0])

    assert all(op.future.result(30).applied for op in ops)
    assert told == [False] * 9
    assert count_rows("id LIKE 'p/%'") == 10
    assert "failed to tell" not in caplog.text
