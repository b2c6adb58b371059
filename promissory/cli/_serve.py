"""``promissory run MODULE:ATTR``: a node hosting the user's actors and agents until told to stop.

The module is imported first (so its agents and actor classes are known), then the runtime
opens (the recovery pass resumes what was in flight), then ``ATTR`` is used: a callable is
called with the runtime (to spawn the actors it wants), an actor class is registered, a list of
them too. The node serves until SIGTERM or SIGINT, then drains: no new work, in-flight handlers
finish their current message, and whatever is left stays in the store for the next start.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import types
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import msgspec

from ..actors import DurableActor
from ..runtime import Runtime
from ._table import json_line, printable


class TargetError(Exception):
    """``MODULE:ATTR`` does not name something that can be run."""


class TargetFailedError(Exception):
    """The function ``MODULE:ATTR`` names raised when it was called with the runtime."""


def load_target(spec: str) -> Any:
    """The object ``MODULE:ATTR`` names (the module alone is fine too)."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise TargetError(f"expected MODULE:ATTR, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TargetError(f"no module named {exc.name!r} (from {spec!r})") from None
    except Exception as exc:  # the module itself raised while it was imported
        raise TargetError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def runnable_target(spec: str) -> Any:
    """The object ``spec`` names, checked to be something ``serve`` can host.

    Raises:
        TargetError: it cannot be imported, or is not a module, a function taking the
            runtime, or actor classes.

    """
    target = load_target(spec)
    if not (isinstance(target, types.ModuleType) or callable(target) or _actor_classes(target)):
        raise TargetError(
            f"{spec} is a {type(target).__name__}: expected a module, a function taking the "
            "runtime, or actor classes"
        )
    return target


def serve(
    spec: str,
    dsn: str | Callable[[], str],
    *,
    ready: Any = None,
    connect_timeout: float = 30.0,
    as_json: bool = False,
    retention: timedelta | None = None,
) -> int:
    """Host ``spec``'s actors until SIGTERM or SIGINT; return the exit status.

    ``spec`` is imported and checked before anything else (``dsn`` may be a function, called
    only then, so a bad target never starts the embedded server). The database must answer
    within ``connect_timeout`` seconds at start; once serving, the node rides out outages
    (its store reconnects with backoff). With ``as_json`` each event (``serving``,
    ``draining``, ``stopped``) is one line of JSON. ``retention``: see ``Runtime``.

    Raises:
        TargetError: ``spec`` cannot be hosted.
        TargetFailedError: the function ``spec`` names raised (the node closed again).

    """

    def say(event: str, text: str, **fields: Any) -> None:
        line = json_line({"event": event, **fields}) if as_json else printable(text)
        # One write, line and end together: a handler printing from another thread at the
        # same moment cannot land inside the line.
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    target = runnable_target(spec)
    if callable(dsn):
        dsn = dsn()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    classes = _actor_classes(target)
    try:
        rt = Runtime(dsn, actors=classes, connect_timeout=connect_timeout, retention=retention)
        with rt:
            if callable(target) and not isinstance(target, type):
                try:
                    target(rt)
                except Exception as exc:
                    raise TargetFailedError(f"{spec} raised {_describe(exc)}") from exc
            say(
                "serving",
                _serving(rt, spec),
                node=rt.node_id,
                target=spec,
                recovery=msgspec.to_builtins(rt.recovery),
            )
            if ready is not None:
                ready()
            # Woken now and then: a signal the kernel hands to another thread of the process
            # only runs its Python handler when the main thread runs again, and a wait with no
            # timeout would never return (SIGTERM then hung the node).
            while not stop.wait(0.2):
                pass
            say("draining", "promissory: draining (no new work; in-flight messages finish)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped", "promissory: stopped")
    return 0


def _serving(rt: Runtime, spec: str) -> str:
    """The line that says the node serves ``spec``, with what its recovery pass found."""
    report = rt.recovery
    found = (
        f" (recovered {report.actors} actors, {report.activated} active, "
        f"{report.suspended} suspended)"
        if report is not None
        else ""
    )
    return f"promissory node {rt.node_id} serving {spec}{found}"


def _actor_classes(target: Any) -> list[type[DurableActor[Any]]]:
    items = target if isinstance(target, list | tuple) else [target]
    return [t for t in items if isinstance(t, type) and issubclass(t, DurableActor)]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
