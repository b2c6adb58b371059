"""The actor types this process can host, by their stable names.

Every ``DurableActor`` class registers itself when it is defined, under its type name: its
importable name ``module:QualName``, or the one it gives (``class Counter(DurableActor[N],
name="counter")``). An actor's row keeps that name (its ``kind``), so any process that has
the class registered under it can host the actor, and only those do: a node hosts exactly
the types its process has defined (imported), or the subset ``Runtime(hosts=...)`` names.
Nothing is ever imported because a row names it.

A class defined in a script (``__main__``) has no name another process can find it by: it is
hosted here, but spawning it is refused unless it is given a ``name=``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..errors import InvalidInputError

log = logging.getLogger("promissory.actors")

_lock = threading.Lock()
_types: dict[str, type[Any]] = {}
_version = 0

__all__ = ["known_types", "register_type", "registered_type", "types_version"]


def register_type(name: str, cls: type[Any]) -> None:
    """Make ``cls`` hostable under ``name`` in this process.

    A class defined again under the same qualified name (a module reloaded, a test defining it
    twice) replaces the old one quietly; another class claiming a name taken by a class of
    another qualified name is warned about (the later one wins here; other processes may
    differ).
    """
    global _version
    with _lock:
        old = _types.get(name)
        if old is not None and old is not cls and _qualname(old) != _qualname(cls):
            log.warning(
                "two actor types claim the name %r: %s and %s; %s is hosted under it here",
                name,
                _qualname(old),
                _qualname(cls),
                _qualname(cls),
            )
        _types[name] = cls
        _version += 1


def registered_type(name: str) -> type[Any] | None:
    """The class registered under ``name`` in this process, if any."""
    return _types.get(name)


def known_types() -> dict[str, type[Any]]:
    """Every type registered in this process, by name."""
    with _lock:
        return dict(_types)


def types_version() -> int:
    """A number that grows each time a type is registered (to notice new ones cheaply)."""
    return _version


def check_hostable_name(cls: type[Any], name: str) -> None:
    """Refuse to keep an actor of ``cls`` under ``name`` if no other process could host it.

    Raises:
        InvalidInputError: the class is defined in a script (``__main__``) and has no name.

    """
    if name.startswith("__main__:"):
        raise InvalidInputError(
            f"{cls.__qualname__} is defined in a script (__main__), so no other process can "
            f"host its actors by that name, nor this one after a restart under another "
            f"script: define it in an importable module, or give it a stable name: "
            f'class {cls.__qualname__}({_base(cls)}, name="myapp.{cls.__qualname__}")'
        )


def _base(cls: type[Any]) -> str:
    base = cls.__mro__[1]
    return f"{base.__name__}[...]" if base.__name__ == "DurableActor" else base.__name__


def _qualname(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
