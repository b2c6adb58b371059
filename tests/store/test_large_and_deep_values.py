"""Values at the edges: big ones are written without hanging the group commit, and values the
store could not read back (too big, too deep, NaN) are refused at the caller with a clear error."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from promissory.errors import DecodeError, EncodeError
from promissory.store import Store, decode, encode
from promissory.store._codec import MAX_DEPTH, MAX_VALUE_BYTES


def nested(depth: int) -> list[object]:
    root: list[object] = []
    inner = root
    for _ in range(depth - 1):
        child: list[object] = []
        inner.append(child)
        inner = child
    return root


@pytest.mark.timeout(120)
def test_a_60_mb_value_is_written_and_read_back_and_the_store_keeps_working(
    store: Store,
) -> None:
    big = "x" * 60_000_000
    store.create("big/1", param=big)
    store.resolve("big/1", big)
    assert len(store.get("big/1").value_as(str)) == 60_000_000
    # The writer is not stuck: an ordinary write right after commits.
    store.create("after/1")
    assert store.get("after/1").state.value == "pending"


@pytest.mark.timeout(180)
def test_32_concurrent_writers_of_1_mb_each_do_not_hang_the_writer(store: Store) -> None:
    value = "y" * 1_000_000
    for run in range(3):
        barrier = threading.Barrier(32)

        def write(i: int, run: int = run, barrier: threading.Barrier = barrier) -> int:
            barrier.wait()
            store.create(f"mb/{run}/{i}", param=value)
            return len(store.resolve(f"mb/{run}/{i}", value).promise.value_as(str))

        with ThreadPoolExecutor(32) as pool:
            assert list(pool.map(write, range(32))) == [1_000_000] * 32
    store.create("after/2")


def test_a_value_over_the_maximum_size_is_refused_and_nothing_is_written(store: Store) -> None:
    with pytest.raises(EncodeError, match="over the maximum"):
        store.create("too-big/1", param="z" * (MAX_VALUE_BYTES + 1))
    assert store.find("too-big/1") is None


def test_a_value_nested_deeper_than_the_limit_is_refused_clearly(store: Store) -> None:
    with pytest.raises(EncodeError, match="levels deep"):
        store.create("deep/1", param=nested(MAX_DEPTH + 1))
    assert store.find("deep/1") is None
    store.create("deep/2", param=nested(MAX_DEPTH))
    assert store.get("deep/2").param is not None


@pytest.mark.parametrize("depth", [994, 1_000, 5_000])
def test_values_nested_past_the_interpreter_limit_raise_encode_error_not_recursion_error(
    depth: int,
) -> None:
    with pytest.raises(EncodeError):
        encode(nested(depth))


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[[[[{{{{ \\" \\\\" [[[['
    assert decode(encode([text] * (MAX_DEPTH * 2)).encode()) == [text] * (MAX_DEPTH * 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused_not_stored_as_null(store: Store, bad: float) -> None:
    with pytest.raises(EncodeError, match="not a finite number"):
        store.create("nan/1", param={"scores": [1.0, bad]})
    assert store.find("nan/1") is None
    assert encode({"a": None, "b": 1.5}) == '{"a":null,"b":1.5}'


def test_stored_json_too_deep_to_read_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(b"[" * 50_000 + b"]" * 50_000)
