"""Values between the wire and the ``promises`` table: base64 JSON is kept as that JSON (an
actor reads it, SQL reads it); anything else is kept whole and comes back exactly as it came."""

from __future__ import annotations

import base64

import msgspec
import pytest

from promissory.protocol._wire import Value, stored_json, wire_value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b'{"a": 1}', '{"a": 1}'),
        (b"42", "42"),
        (b'"text"', '"text"'),
        (b"null", "null"),
        (b"[1, 2]", "[1, 2]"),
    ],
)
def test_base64_json_is_kept_as_json(data: bytes, kept: str) -> None:
    assert stored_json(Value(data=b64(data))) == kept
    assert wire_value(kept.encode()) == {"data": b64(kept.encode())}


@pytest.mark.parametrize(
    "value",
    [
        Value(data=b64(b"\x00\x01 not json")),  # encrypted bytes, say
        Value(data="not base64!"),
        Value(data=b64(b'"nul \\u0000 inside"')),  # jsonb holds no NUL
        Value(data=b64(b'{"$resonate": 1}')),  # would read back as wrapped
        Value(headers={"k": "v"}, data=b64(b"1")),
        Value(headers={"k": "v"}),
    ],
)
def test_anything_else_comes_back_exactly_as_it_came(value: Value) -> None:
    kept = stored_json(value)
    assert kept is not None
    msgspec.json.decode(kept)  # valid JSON for the jsonb column
    back = wire_value(kept.encode())
    assert back == {k: v for k, v in msgspec.structs.asdict(value).items() if v is not None}


def test_no_value_is_kept_as_none() -> None:
    assert stored_json(None) is None and stored_json(Value()) is None
    assert wire_value(None) == {}
