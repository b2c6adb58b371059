"""Values and failures to and from the JSON the store keeps.

Values are encoded by msgspec (builtins, Structs, dataclasses, datetimes, UUIDs, enums) and
stored as ``jsonb``, so a person can read them in SQL; they decode back to their type when the
caller names it. Failures are stored as an ``ErrorInfo`` object and rebuilt as the original
exception type where that type can be found and constructed, as ``RemoteError`` otherwise.
Encoders and decoders are made once per type.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback as traceback_module
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import DecodeError, EncodeError, RemoteError

if TYPE_CHECKING:
    from ._records import ErrorInfo

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
# A NUL character as msgspec writes it: ``\u0000`` after an even number of backslashes (an odd
# number means the backslash itself was escaped, and the text is a literal "\u0000").
_NUL_ESCAPE = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def encode(value: Any, *, what: str = "value") -> str:
    """Encode ``value`` as JSON text fit for a ``jsonb`` column.

    Raises:
        EncodeError: msgspec cannot encode it, or it holds a NUL character (jsonb has none).

    """
    try:
        data = _encoder.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: a str holding a lone surrogate, which has no UTF-8 form.
        raise EncodeError(
            f"the {what} cannot be encoded as JSON ({type(value).__name__}): {exc}"
        ) from exc
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise EncodeError(f"the {what} holds a NUL character, which Postgres jsonb cannot store")
    return data.decode()


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


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe ``exc`` as a storable ``ErrorInfo``, with its traceback text."""
    from ._records import ErrorInfo

    if isinstance(exc, RemoteError):
        return ErrorInfo(type=exc.type_name, message=exc.message, traceback=exc.remote_traceback)
    cls = type(exc)
    args: list[Any] | None = list(exc.args)
    try:
        _encoder.encode(args)
    except (TypeError, msgspec.EncodeError, OverflowError):
        args = None
    tb = "".join(traceback_module.format_exception(exc)) if exc.__traceback__ else None
    return ErrorInfo(
        type=f"{cls.__module__}.{cls.__qualname__}", message=str(exc), args=args, traceback=tb
    )


def rebuild_error(info: ErrorInfo) -> BaseException:
    """Rebuild the exception an ``ErrorInfo`` describes, or a ``RemoteError`` in its place.

    The result depends only on ``info`` and the code loaded, so a replay raises the same
    exception type as the first run did.
    """
    cls = _find_exception_type(info.type)
    if cls is not None:
        try:
            exc = cls(*info.args) if info.args is not None else cls(info.message)
        except Exception:
            exc = None
        if exc is not None:
            return exc
    return RemoteError(info.type, info.message, info.traceback)


def _find_exception_type(name: str) -> type[BaseException] | None:
    # A qualified name may sit in a dotted module; try the longest importable prefix.
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name, qualname = ".".join(parts[:cut]), ".".join(parts[cut:])
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception:
                continue
        obj: Any = module
        for attr in qualname.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return obj
        return None
    return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)
