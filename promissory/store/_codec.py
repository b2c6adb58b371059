"""Values to and from the JSON the store keeps (failures: ``_failures``).

Values are encoded by msgspec (builtins, Structs, dataclasses, datetimes, UUIDs, enums) and
stored as ``jsonb``, so a person can read them in SQL; they decode back to their type when the
caller names it. Encoders and decoders are made once per type.

Every value kept is bounded, so that whatever is stored can be read back by any process:
at most ``MAX_VALUE_BYTES`` of JSON, nested at most ``MAX_DEPTH`` arrays and objects deep, and
holding only finite numbers (JSON has no NaN or infinity; msgspec would write ``null``).
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeVar

import msgspec

from ..errors import DecodeError, EncodeError

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
# A NUL character as msgspec writes it: ``\u0000`` after an even number of backslashes (an odd
# number means the backslash itself was escaped, and the text is a literal "\u0000").
_NUL_ESCAPE = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}

MAX_VALUE_BYTES = 64 * 1024 * 1024
"""The largest value (param, reply, state, step result) kept, in bytes of JSON: 64 MiB."""
MAX_DEPTH = 256
"""How deep arrays and objects may nest in a value kept. Decoding is recursive: a deeper value
could be written by one thread and be unreadable by another with less stack to spare."""
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def encode(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as JSON text fit for a ``jsonb`` column.

    Raises:
        EncodeError: msgspec cannot encode it, or it holds a NUL character (jsonb has none).

    """
    try:
        data = _encoder.encode(value)
    except RecursionError as exc:
        raise EncodeError(
            f"the {what} is nested too deeply to encode (at most {MAX_DEPTH} levels are kept)"
        ) from exc
    except (TypeError, msgspec.EncodeError, OverflowError, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: a str holding a lone surrogate, which has no UTF-8 form.
        raise EncodeError(
            f"the {what} cannot be encoded as JSON ({type(value).__name__}): {exc}"
        ) from exc
    if len(data) > MAX_VALUE_BYTES:
        raise EncodeError(
            f"the {what} is {len(data):,} bytes of JSON, over the maximum of "
            f"{MAX_VALUE_BYTES:,} (MAX_VALUE_BYTES); keep large data elsewhere and store a "
            f"reference to it"
        )
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise EncodeError(f"the {what} holds a NUL character, which Postgres jsonb cannot store")
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise EncodeError(
            f"the {what} nests arrays and objects more than {MAX_DEPTH} levels deep (MAX_DEPTH)"
        )
    if b"null" in data:
        where = _non_finite(value, what, 0)
        if where is not None:
            raise EncodeError(
                f"{where} is not a finite number (NaN and infinity have no JSON form; "
                f"store None or a string instead)"
            )
    return data.decode()


def _depth(data: bytes) -> int:
    """How deep arrays and objects nest in msgspec's JSON ``data`` (up to ``MAX_DEPTH + 1``)."""
    # Drop the strings' contents (msgspec escapes every quote and backslash inside them), keep
    # only the brackets, then peel innermost pairs a level at a time: all in C, no byte loop.
    text = b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    text = text.translate(_BRACKETS, _NOT_BRACKETS)
    depth = 0
    while text and depth <= MAX_DEPTH:
        text = text.replace(b"()", b"")
        depth += 1
    return depth


def _non_finite(value: Any, path: str, depth: int) -> str | None:
    """Where a NaN or infinity sits in ``value`` (msgspec writes them as ``null``), if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} ({value!r})"
    if depth > MAX_DEPTH or isinstance(value, (str, bytes, int, bool)) or value is None:
        return None
    items: Any
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    elif isinstance(value, msgspec.Struct):
        items = ((f, getattr(value, f, None)) for f in value.__struct_fields__)
    elif hasattr(value, "__dataclass_fields__"):
        items = ((f, getattr(value, f, None)) for f in value.__dataclass_fields__)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{path}[{key!r}]", depth + 1)
        if found is not None:
            return found
    return None


def decode(raw: bytes | msgspec.Raw | None, type: Any = Any) -> Any:
    """Decode stored JSON as ``type``; ``None`` stays ``None``.

    Raises:
        DecodeError: the JSON does not fit ``type``.

    """
    if raw is None:
        return None
    decoder = _decoders.get(type)
    if decoder is None:
        decoder = _decoders.setdefault(type, msgspec.json.Decoder(type))
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"stored JSON does not decode as {_type_name(type)}: {exc}") from exc
    except (msgspec.DecodeError, RecursionError) as exc:
        # Not JSON at all (written by hand, say), or nested deeper than this thread can
        # follow: unreadable here, which is the caller's error to report, not a crash.
        raise DecodeError(f"stored JSON cannot be read as {_type_name(type)}: {exc!r}") from exc


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)
