"""Values and errors: typed round trips through param and value, JSON a person can read in SQL."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest

from promissory.errors import (
    DecodeError,
    InvalidIdError,
    PromiseNotFoundError,
    PromiseTimedOutError,
    RemoteError,
    StoreUnavailableError,
)
from promissory.store import ErrorInfo, Store, decode, encode, error_info, rebuild_error


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(msgspec.Struct, frozen=True):
    sku: str
    qty: int


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    placed_at: datetime
    total: Decimal
    lines: list[Line]
    color: Color
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Invoice:
    number: int
    due: date
    amounts: tuple[float, ...]
    meta: dict[str, Any]


ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    placed_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    total=Decimal("12.50"),
    lines=[Line("a", 1), Line("b", 2)],
    color=Color.BLUE,
)
INVOICE = Invoice(7, date(2024, 12, 31), (1.5, 2.25), {"paid": False, "tags": ["x", "y"]})


def test_a_struct_round_trips_through_param_and_value(store: Store) -> None:
    store.create("o/1", param=ORDER)
    store.resolve("o/1", ORDER)

    p = store.get("o/1")

    assert p.param_as(Order) == ORDER
    assert p.value_as(Order) == ORDER


def test_a_dataclass_round_trips(store: Store) -> None:
    store.create("inv/1", param=INVOICE)

    assert store.get("inv/1").param_as(Invoice) == INVOICE


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime),
        (datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))), datetime),
        (uuid.UUID("00000000-0000-0000-0000-000000000001"), uuid.UUID),
        (Decimal("3.14159265358979323846"), Decimal),
        ({"a": [1, 2.5, None, True, {"b": "c"}], "empty": {}, "n": -0.0}, dict[str, Any]),
        ([1, "two", [3, [4]]], list[Any]),
        ((1, "a"), tuple[int, str]),
        ("text with \u00fc, \u65e5\u672c and \U0001f600", str),
        ("a literal backslash-u-0000: \\u0000", str),
        (2**62, int),
        (2**80, int),
        (Color.RED, Color),
        (None, Any),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_value_round_trips_when_decoded_with_its_type(
    store: Store, value: Any, type_: Any
) -> None:
    store.create("v", param=value)
    store.resolve("v", value)

    p = store.get("v")

    assert p.param_as(type_) == value
    assert p.value_as(type_) == value


def test_values_decode_as_plain_json_without_a_type(store: Store) -> None:
    store.create("plain", param=ORDER)

    assert store.get("plain").param_as() == {
        "id": "12345678-1234-5678-1234-567812345678",
        "placed_at": "2024-05-06T07:08:09.123456Z",
        "total": "12.50",
        "lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}],
        "color": "blue",
        "note": None,
    }


def test_a_value_that_does_not_fit_the_type_raises_decode_error(store: Store) -> None:
    store.create("d", param={"qty": "many"})

    with pytest.raises(DecodeError, match="does not decode as Line"):
        store.get("d").param_as(Line)
    with pytest.raises(DecodeError):
        decode(b'"text"', int)


def test_values_are_stored_as_json_readable_in_sql(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("sql/1", param={"customer": "ada", "qty": 3})
    store.resolve("sql/1", ORDER)

    row = db.execute(
        "SELECT param->>'customer', jsonb_typeof(param->'qty'), (param->>'qty')::int, "
        "value->>'id', value->>'total', value->'lines'->0->>'sku', value->>'color' "
        "FROM promises WHERE id = 'sql/1'"
    ).fetchone()

    assert row == ("ada", "number", 3, str(ORDER.id), "12.50", "a", "blue")


def test_errors_are_stored_as_json_with_type_message_and_traceback(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("err/1")
    try:
        {}["missing"]
    except KeyError as exc:
        store.reject("err/1", exc)

    row = db.execute(
        "SELECT state, value->>'type', value->>'message', value->'args'->>0, "
        "value->>'traceback' FROM promises WHERE id = 'err/1'"
    ).fetchone()

    assert row is not None
    state, type_, message, arg, tb = row
    assert (state, type_, message, arg) == ("rejected", "builtins.KeyError", "'missing'", "missing")
    assert "Traceback (most recent call last)" in tb
    assert "KeyError: 'missing'" in tb


def test_a_stored_error_rebuilds_as_the_original_exception(store: Store) -> None:
    store.create("err/2")
    store.reject("err/2", KeyError("k"))

    info = store.get("err/2").error()

    assert info is not None
    rebuilt = rebuild_error(info)
    assert type(rebuilt) is KeyError
    assert rebuilt.args == ("k",)


class LocalError(Exception):
    """An error type this test module defines (and so can rebuild)."""


class NeedsKeywords(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("v"),
        KeyError("k"),
        TimeoutError("slow"),
        ZeroDivisionError("division by zero"),
        LocalError("mine", 3),
        InvalidIdError("bad id"),
        PromiseNotFoundError("no promise has the id 'x'", "x"),
        PromiseTimedOutError("timed out", "step/1"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_rebuild_error_rebuilds_builtin_local_and_promissory_errors(exc: Exception) -> None:
    info = error_info(exc)
    stored = msgspec.json.decode(encode(info), type=ErrorInfo)

    rebuilt = rebuild_error(stored)

    assert type(rebuilt) is type(exc)
    assert rebuilt.args == exc.args
    assert str(rebuilt) == str(exc)


def test_a_rebuilt_promise_failed_error_keeps_its_promise_id() -> None:
    rebuilt = rebuild_error(error_info(PromiseTimedOutError("timed out", "step/1")))

    assert isinstance(rebuilt, PromiseTimedOutError)
    assert rebuilt.promise_id == "step/1"


def test_rebuild_error_gives_remote_error_for_an_unknown_type() -> None:
    info = ErrorInfo(
        type="elsewhere.errors.QuotaExceeded", message="over quota", traceback="Traceback: ..."
    )

    rebuilt = rebuild_error(info)

    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name == "elsewhere.errors.QuotaExceeded"
    assert rebuilt.message == "over quota"
    assert rebuilt.remote_traceback == "Traceback: ..."
    assert str(rebuilt) == "elsewhere.errors.QuotaExceeded: over quota"


@pytest.mark.parametrize(
    "type_name",
    ["builtins.int", "builtins.NoSuchError", "os.path", "nomodule", f"{__name__}.ORDER"],
)
def test_rebuild_error_gives_remote_error_for_names_that_are_not_exception_types(
    type_name: str,
) -> None:
    rebuilt = rebuild_error(ErrorInfo(type=type_name, message="m", args=["m"]))

    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name == type_name


def test_rebuild_error_gives_remote_error_when_the_type_cannot_be_constructed() -> None:
    info = error_info(NeedsKeywords(code=7))

    rebuilt = rebuild_error(info)

    assert isinstance(rebuilt, RemoteError)
    assert rebuilt.type_name.endswith("NeedsKeywords")
    assert rebuilt.message == "code 7"


def test_an_error_with_arguments_json_cannot_hold_rebuilds_from_its_message() -> None:
    info = error_info(ValueError(object()))

    assert info.args is None
    rebuilt = rebuild_error(info)
    assert type(rebuilt) is ValueError
    assert str(rebuilt) == info.message


def test_a_remote_error_stored_again_keeps_its_original_type() -> None:
    remote = RemoteError("elsewhere.Boom", "boom", "tb")

    again = rebuild_error(error_info(remote))

    assert isinstance(again, RemoteError)
    assert (again.type_name, again.message, again.remote_traceback) == (
        "elsewhere.Boom",
        "boom",
        "tb",
    )


def test_a_store_error_is_constructible_from_its_stored_arguments() -> None:
    rebuilt = rebuild_error(error_info(StoreUnavailableError("db down")))

    assert type(rebuilt) is StoreUnavailableError
    assert str(rebuilt) == "db down"
