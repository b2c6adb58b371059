"""Who is waiting for what: in-process subscriptions to store events, fed by two sources.

The writer publishes the events of the batches it commits (a settle in this process wakes its
waiters before the settling call returns); the listener publishes what other processes
announce with NOTIFY. Callbacks run on those threads and must only hand work on (set an event,
schedule a call); they must not block. After a lost LISTEN connection every subscriber is
called once with ``resync=True``, since notifications sent meanwhile are gone.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable

from ._writer import Event

log = logging.getLogger("promissory.store")

Callback = Callable[[str, str, bool], None]
"""Called as ``callback(kind, key, resync)``."""


class Subscription:
    """A registration with an ``EventHub``; ``cancel()`` ends it (idempotent)."""

    __slots__ = ("_hub", "_token", "kind", "keys")

    def __init__(self, hub: EventHub, token: int, kind: str, keys: tuple[str, ...]) -> None:
        self._hub = hub
        self._token = token
        self.kind = kind
        self.keys = keys

    def cancel(self) -> None:
        """Stop receiving events."""
        self._hub._remove(self)


class EventHub:
    """Subscriptions keyed by (kind, key); ``key=""`` receives every event of its kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[tuple[str, str], dict[int, Callback]] = {}
        self._tokens = itertools.count()

    def subscribe(self, kind: str, keys: Iterable[str], callback: Callback) -> Subscription:
        """Call ``callback`` whenever an event of ``kind`` for one of ``keys`` is published."""
        token = next(self._tokens)
        keys = tuple(keys)
        with self._lock:
            for key in keys:
                self._subs.setdefault((kind, key), {})[token] = callback
        return Subscription(self, token, kind, keys)

    def publish(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` to their subscribers."""
        calls: list[tuple[Callback, str, str]] = []
        with self._lock:
            for kind, key in events:
                for sub_key in (key, ""):
                    subs = self._subs.get((kind, sub_key))
                    if subs:
                        calls.extend((cb, kind, key) for cb in subs.values())
        for callback, kind, key in calls:
            self._call(callback, kind, key, False)

    def resync(self) -> None:
        """Tell every subscriber that events may have been missed."""
        with self._lock:
            calls = [
                (cb, kind, key) for (kind, key), subs in self._subs.items() for cb in subs.values()
            ]
        for callback, kind, key in calls:
            self._call(callback, kind, key, True)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            for key in sub.keys:
                subs = self._subs.get((sub.kind, key))
                if subs is not None:
                    subs.pop(sub._token, None)
                    if not subs:
                        del self._subs[(sub.kind, key)]

    @staticmethod
    def _call(callback: Callback, kind: str, key: str, resync: bool) -> None:
        try:
            callback(kind, key, resync)
        except Exception:
            log.exception("promissory: a store event callback failed")
