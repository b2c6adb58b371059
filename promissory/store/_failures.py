"""Failures to and from the JSON the store keeps: ``ErrorInfo`` and back.

A failure is stored as an ``ErrorInfo`` object (its type's qualified name, message, arguments
and traceback text) and rebuilt as the original exception type where that type can be found
and constructed, as ``RemoteError`` otherwise.

A stored failure is data anyone who can settle a promise can write, so rebuilding one never
imports a module and never makes anything but an ``Exception``: its type must be registered
(``register_error``) or defined in a module this process has already imported.
"""

from __future__ import annotations

import sys
import traceback as traceback_module
from typing import Any, TypeVar

import msgspec

from .. import errors
from ..errors import InvalidInputError, RemoteError
from ._records import ErrorInfo

E = TypeVar("E", bound=Exception)

_encoder = msgspec.json.Encoder()
_registered: dict[str, type[Exception]] = {}


def error_info(exc: BaseException) -> ErrorInfo:
    """Describe ``exc`` as a storable ``ErrorInfo``, with its traceback text."""
    if isinstance(exc, RemoteError):
        return ErrorInfo(type=exc.type_name, message=exc.message, traceback=exc.remote_traceback)
    args: list[Any] | None = list(exc.args)
    try:
        _encoder.encode(args)
    except (TypeError, msgspec.EncodeError, OverflowError):
        args = None
    tb = "".join(traceback_module.format_exception(exc)) if exc.__traceback__ else None
    return ErrorInfo(type=_qualified_name(type(exc)), message=str(exc), args=args, traceback=tb)


def register_error(cls: type[E], *names: str) -> type[E]:
    """Let stored failures of type ``cls`` be rebuilt as ``cls``, by its name and ``names``.

    A failure's type is otherwise rebuilt only when its module is already imported in the
    process that reads it; registering makes that independent of import order, and ``names``
    keep old names working after the class moved or was renamed. Usable as a decorator.

    Example:
        >>> @register_error
        ... class QuotaExceeded(Exception):
        ...     pass
        >>> _ = register_error(QuotaExceeded, "billing.errors.QuotaExceeded")  # an old name

    Raises:
        InvalidInputError: ``cls`` is not a subclass of ``Exception``.

    """
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise InvalidInputError(f"only Exception subclasses can be registered, not {cls!r}")
    for name in (_qualified_name(cls), *names):
        _registered[name] = cls
    return cls


def rebuild_error(info: ErrorInfo) -> BaseException:
    """Rebuild the exception an ``ErrorInfo`` describes, or a ``RemoteError`` in its place.

    Only an ``Exception`` subclass that is registered (``register_error``) or defined in a
    module already imported here is rebuilt; nothing is imported, and no ``BaseException``
    that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``…) is ever made from
    stored data. Anything else, or a type whose constructor refuses the stored arguments,
    comes back as a ``RemoteError`` with the stored type name, message and traceback. The
    result depends only on ``info`` and the code loaded, so a replay raises the same
    exception type as the first run did.
    """
    cls = _find_exception_type(info.type)
    if cls is not None:
        try:
            exc = cls(*info.args) if info.args is not None else cls(info.message)
        except Exception:
            exc = None
        if isinstance(exc, Exception):
            return exc
    return RemoteError(info.type, info.message, info.traceback)


def _find_exception_type(name: str) -> type[Exception] | None:
    registered = _registered.get(name)
    if registered is not None:
        return registered
    # A qualified name may sit in a dotted module; try the longest prefix already imported.
    # Only module and class namespaces are read (``vars``), never ``getattr``: a module's
    # ``__getattr__`` could import or run code.
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        obj: Any = module
        for attr in parts[cut:]:
            try:
                obj = vars(obj).get(attr)
            except TypeError:  # no __dict__ to read
                obj = None
            if obj is None:
                break
        if isinstance(obj, type) and issubclass(obj, Exception):
            return obj
        return None
    return None


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_FORMER_NAMES: dict[type[Exception], tuple[str, ...]] = {
    errors.ChildFailedError: ("promissory.errors.ChildFailed",),
    errors.ChildCanceledError: ("promissory.errors.ChildCancelled",),
    errors.EscalationError: ("promissory.actors._supervisor.EscalationError",),
    errors.UnknownMessageError: ("promissory.actors._activation.UnknownMessageError",),
    errors.OutputInvalidError: ("promissory.agents._loop.OutputInvalidError",),
}
"""Names under which earlier versions stored promissory's own errors (before a class was
renamed, or moved to ``promissory.errors``): stored rows that name them still rebuild."""

for _cls, _names in _FORMER_NAMES.items():
    register_error(_cls, *_names)
