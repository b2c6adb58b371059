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
from typing import Any

import msgspec

from ..actors import DurableActor
from ..runtime import Runtime


class TargetError(Exception):
    """``MODULE:ATTR`` does not name something that can be run."""


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
    if not attr:
        return module
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def serve(
    spec: str,
    dsn: str,
    *,
    ready: Any = None,
    connect_timeout: float = 30.0,
    as_json: bool = False,
) -> int:
    """Host ``spec``'s actors until SIGTERM or SIGINT; return the exit status.

    The database must answer within ``connect_timeout`` seconds at start; once serving, the
    node rides out outages (its store reconnects with backoff). With ``as_json`` each event
    (``serving``, ``draining``, ``stopped``) is one line of JSON.
    """

    def say(event: str, text: str, **fields: Any) -> None:
        if as_json:
            print(msgspec.json.encode({"event": event, **fields}).decode(), flush=True)
        else:
            print(text, flush=True)

    target = load_target(spec)
    if not (isinstance(target, types.ModuleType) or callable(target) or _actor_classes(target)):
        raise TargetError(
            f"{spec} is a {type(target).__name__}: expected a module, a function taking the "
            "runtime, or actor classes"
        )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    classes = _actor_classes(target)
    try:
        rt = Runtime(dsn, actors=classes, connect_timeout=connect_timeout)
        with rt:
            if callable(target) and not isinstance(target, type):
                target(rt)
            report = rt.recovery
            say(
                "serving",
                f"promissory node {rt.node_id} serving {spec}"
                + (
                    f" (recovered {report.actors} actors, {report.activated} active, "
                    f"{report.suspended} suspended)"
                    if report is not None
                    else ""
                ),
                node=rt.node_id,
                target=spec,
                recovery=msgspec.to_builtins(report),
            )
            if ready is not None:
                ready()
            stop.wait()
            say("draining", "promissory: draining (no new work; in-flight messages finish)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say("stopped", "promissory: stopped")
    return 0


def _actor_classes(target: Any) -> list[type[DurableActor[Any]]]:
    items = target if isinstance(target, list | tuple) else [target]
    return [t for t in items if isinstance(t, type) and issubclass(t, DurableActor)]
