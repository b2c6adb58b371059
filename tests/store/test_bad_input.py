"""Bad input: a clear error from ``promissory.errors``, and nothing written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from promissory.errors import (
    EncodeError,
    InvalidIdError,
    InvalidInputError,
    InvalidTagsError,
    PromiseNotFoundError,
    PromissoryError,
)
from promissory.store import PromiseState, Store


@pytest.fixture
def unchanged(
    store: Store, db: psycopg.Connection[Any], count_rows: Callable[..., int]
) -> Iterator[None]:
    """Asserts after the test that the table holds exactly the rows it held before."""
    store.create("existing/pending", param={"keep": True})
    before = db.execute("SELECT id, state, param, value FROM promises ORDER BY id").fetchall()
    yield
    after = db.execute("SELECT id, state, param, value FROM promises ORDER BY id").fetchall()
    assert after == before


BAD_IDS = [
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("x" * 2049, "at most", id="too-long"),
    pytest.param("a/\n/b", "control characters", id="newline"),
    pytest.param("a\x00b", "control characters", id="nul"),
    pytest.param("a\x7fb", "control characters", id="del"),
    pytest.param("a\tb", "control characters", id="tab"),
    pytest.param("a\x85b", "control characters", id="c1-control"),
    pytest.param("a\ud800b", "lone surrogates", id="lone-surrogate"),
    # The ends of each refused range.
    pytest.param("a\x1fb", "control characters", id="unit-separator"),
    pytest.param("\x9f", "control characters", id="last-c1-control"),
    pytest.param("ab\udfff", "lone surrogates", id="last-surrogate"),
    pytest.param(123, "must be a string, not int", id="int"),
    pytest.param(None, "must be a string, not NoneType", id="none"),
    pytest.param(b"bytes", "must be a string, not bytes", id="bytes"),
]

OPERATIONS: dict[str, Callable[[Store, Any], object]] = {
    "create": lambda s, id: s.create(id),
    "resolve": lambda s, id: s.resolve(id, 1),
    "reject": lambda s, id: s.reject(id, "e"),
    "cancel": lambda s, id: s.cancel(id),
    "get": lambda s, id: s.get(id),
    "find": lambda s, id: s.find(id),
    "get_many": lambda s, id: s.get_many(["fine", id]),
}


@pytest.mark.parametrize(("bad_id", "message"), BAD_IDS)
def test_a_bad_id_is_refused_with_invalid_id_error_and_writes_nothing(
    store: Store, unchanged: None, bad_id: Any, message: str
) -> None:
    for name, operation in OPERATIONS.items():
        with pytest.raises(InvalidIdError, match=message) as info:
            operation(store, bad_id)
        assert isinstance(info.value, InvalidInputError), name
        assert isinstance(info.value, ValueError), name


def test_ids_just_past_each_refused_range_are_kept(store: Store) -> None:
    for fine in ("a\xa0b", " ", "~", "a\ue000b", "\U0001f600", "é/ü", "a b"):
        store.create(fine)
        assert store.get(fine).id == fine


def test_writes_refuse_ids_over_1024_characters_and_reads_accept_up_to_2048(
    store: Store, unchanged: None
) -> None:
    # Reads take longer ids: the runtime builds step and message ids under users' ids.
    long = "x" * 1025
    for name in ("create", "resolve", "reject", "cancel"):
        with pytest.raises(InvalidIdError, match="at most 1024 characters"):
            OPERATIONS[name](store, long)
    assert store.find(long) is None
    assert store.get_many([long]) == {}


def test_an_id_of_exactly_1024_characters_is_fine(store: Store) -> None:
    id = "y" * 1024

    assert store.create(id).promise.id == id
    assert store.get(id).id == id


def test_ids_may_hold_any_printable_unicode(store: Store) -> None:
    for id in ("caf\u00e9/\u65e5\u672c/\U0001f600", "with space", "quote'\"", "a\\b", "\u00a0nbsp"):
        assert store.create(id).promise.id == id
        assert store.get(id).id == id


def test_an_id_made_to_look_like_sql_is_stored_verbatim(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    evil = "x'; DROP TABLE promises; --"
    evil_tag = "'); DELETE FROM promises; --"

    store.create(evil, param={"q": evil}, tags={"t": evil_tag})
    store.resolve(evil, evil)

    assert store.get(evil).value_as(str) == evil
    assert [p.id for p in store.search(prefix="x'", tags={"t": evil_tag}).items] == [evil]
    assert db.execute("SELECT id, param->>'q', tags->>'t' FROM promises").fetchall() == [
        (evil, evil, evil_tag)
    ]


class Opaque:
    pass


BAD_VALUES = [
    pytest.param(object(), "cannot be encoded", id="object"),
    pytest.param({1, Opaque()}, "cannot be encoded", id="set-of-objects"),
    pytest.param({"nested": [Opaque()]}, "cannot be encoded", id="nested-object"),
    pytest.param({(1, 2): "tuple key"}, "cannot be encoded", id="tuple-key"),
    pytest.param(lambda: None, "cannot be encoded", id="function"),
    pytest.param("a\x00b", "NUL character", id="nul-in-string"),
    pytest.param({"k": ["ok", "\x00"]}, "NUL character", id="nested-nul"),
    pytest.param({"\x00key": 1}, "NUL character", id="nul-in-key"),
    pytest.param("a\\\x00", "NUL character", id="backslash-then-nul"),
    pytest.param("lone \udc80 surrogate", "cannot be encoded", id="lone-surrogate"),
]


@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
def test_a_param_that_cannot_be_stored_is_refused_and_nothing_is_written(
    store: Store, unchanged: None, value: Any, message: str
) -> None:
    with pytest.raises(EncodeError, match=f"param.*{message}|{message}"):
        store.create("new", param=value)
    assert store.find("new") is None


@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
def test_a_value_that_cannot_be_stored_is_refused_and_the_promise_stays_pending(
    store: Store, unchanged: None, value: Any, message: str
) -> None:
    with pytest.raises(EncodeError, match=message):
        store.resolve("existing/pending", value)
    assert store.get("existing/pending").state is PromiseState.PENDING


def test_an_error_whose_message_cannot_be_stored_is_refused(store: Store, unchanged: None) -> None:
    with pytest.raises(EncodeError, match="NUL character"):
        store.reject("existing/pending", "bad\x00reason")
    assert store.get("existing/pending").state is PromiseState.PENDING


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        pytest.param({"a": 1}, "strings to strings", id="int-value"),
        pytest.param({1: "a"}, "strings to strings", id="int-key"),
        pytest.param({"a": None}, "strings to strings", id="none-value"),
        pytest.param({"a": ["b"]}, "strings to strings", id="list-value"),
        pytest.param(["a", "b"], "mapping of strings, not list", id="list"),
        pytest.param("a=b", "mapping of strings, not str", id="str"),
        pytest.param({"a": "b\x00"}, "NUL character", id="nul"),
    ],
)
def test_bad_tags_are_refused_with_invalid_tags_error(
    store: Store, unchanged: None, tags: Any, message: str
) -> None:
    with pytest.raises(InvalidTagsError, match=message):
        store.create("new", tags=tags)
    with pytest.raises(InvalidTagsError, match=message):
        store.search(tags=tags)


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        pytest.param(-1, "must not be negative", id="negative"),
        pytest.param(-0.001, "must not be negative", id="negative-float"),
        pytest.param(timedelta(seconds=-5), "must not be negative", id="negative-timedelta"),
        pytest.param(float("nan"), "must be finite", id="nan"),
        pytest.param(float("inf"), "must be finite", id="inf"),
        pytest.param(datetime(2030, 1, 1), "timezone-aware", id="naive-datetime"),
        pytest.param(True, "not bool", id="bool"),
        pytest.param("60", "not str", id="str"),
        pytest.param(1e12, "before the year 10000", id="too-far"),
        pytest.param(timedelta.max, "before the year 10000", id="timedelta-max"),
    ],
)
def test_a_bad_timeout_is_refused_with_invalid_input_error(
    store: Store, unchanged: None, timeout: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        store.create("new", timeout=timeout)


@pytest.mark.parametrize(
    "settle",
    [
        pytest.param(lambda s: s.resolve("ghost", 1), id="resolve"),
        pytest.param(lambda s: s.reject("ghost", "e"), id="reject"),
        pytest.param(lambda s: s.cancel("ghost"), id="cancel"),
    ],
)
def test_settling_an_unknown_id_raises_promise_not_found_and_creates_nothing(
    store: Store, unchanged: None, settle: Any
) -> None:
    with pytest.raises(PromiseNotFoundError, match="no promise has the id 'ghost'") as info:
        settle(store)
    assert isinstance(info.value, LookupError)


def test_every_bad_input_error_is_a_promissory_error() -> None:
    for cls in (InvalidIdError, InvalidTagsError, EncodeError, PromiseNotFoundError):
        assert issubclass(cls, PromissoryError)
