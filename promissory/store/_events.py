"""Who is waiting for what: in-process subscriptions to store events, fed by two sources.

The writer publishes the events of the batches it commits (a settle in this process wakes its
waiters before the settling call returns); the listener publishes what other processes
announce with NOTIFY. Callbacks run on those threads and must only hand work on (set an event,
schedule a call); they must not block. After a lost LISTEN connection every subscriber is
called once with ``resync=True``, since notifications sent meanwhile are gone.

Two things spare a reader a query. An ``Expectation`` of a promise, registered before the
write that creates it, takes the settled ``Promise`` a settle in this process carries (an
``ask`` reads no reply). The settle log remembers the ids of recent settles by a running
``mark``, so a party that took a mark before writing a message can later ask, with no read,
whether it was settled since (``settled_since``): the activation of a message it was handed
in-process starts it without reading its journal.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import StoreError
from ._handoff import Signal
from ._ops import Event, EventKind
from ._outage import describe

log = logging.getLogger("promissory.store")

Callback = Callable[[EventKind, str, bool], None]
"""Called as ``callback(kind, key, resync)``."""

SETTLE_LOG = 16384
"""How many recent settles ``settled_since`` remembers; an older mark answers "maybe"."""


class Subscription:
    """A registration with an ``EventHub``; ``cancel()`` ends it (idempotent)."""

    __slots__ = ("_hub", "_token", "kind", "keys")

    def __init__(self, hub: EventHub, token: int, kind: EventKind, keys: tuple[str, ...]) -> None:
        self._hub = hub
        self._token = token
        self.kind = kind
        self.keys = keys

    def cancel(self) -> None:
        """Stop receiving events."""
        self._hub._remove(self)


class Expectation:
    """A wait for one promise to settle, registered before it can: ``woken`` is set by its
    settle (or a resync), and ``promise`` holds the settled record when the settle was written
    in this process. ``cancel()`` ends it (idempotent).

    The hub keeps it until its settle is published (then lets it go: a settle is final) or it
    is canceled; a canceled one its settle came for costs nothing more (a ``Reply`` cancels
    its expectation when it is dropped).
    """

    __slots__ = ("id", "promise", "woken", "_hub", "_held", "__weakref__")

    def __init__(self, hub: EventHub, id: str) -> None:
        self.id = id
        self.promise: Any = None
        self.woken = Signal()
        self._hub = hub
        self._held = True
        """Whether the hub may still hold it (cleared under the hub's lock when let go)."""

    def cancel(self) -> None:
        """Stop waiting."""
        if self._held:
            self._hub._unexpect(self)


_LOCK_WAIT = 0.05
"""Seconds a subscription's removal waits for the hub's lock before it leaves the removal to
the lock's next holder (see ``EventHub._locked``)."""


class EventHub:
    """Subscriptions keyed by (kind, key); ``key=""`` receives every event of its kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[tuple[EventKind, str], dict[int, Callback]] = {}
        self._tokens = itertools.count()
        self._expected: dict[str, list[Expectation]] = {}
        self._settles = 0
        self._settled: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._resynced = 0
        self._settling: dict[str, int] = {}
        self._held: list[Event] = []
        self._later: collections.deque[Callable[[], None]] = collections.deque()
        """Removals left for the next holder of the lock (see ``_locked``)."""

    def expect(self, id: str) -> Expectation:
        """Register an ``Expectation`` of promise ``id`` (before writing what settles it)."""
        exp = Expectation(self, id)
        with self._lock:
            self._expected.setdefault(id, []).append(exp)
        return exp

    def _unexpect(self, exp: Expectation) -> None:
        self._locked(functools.partial(self._unexpect_now, exp))

    def _unexpect_now(self, exp: Expectation) -> None:
        exp._held = False
        waiting = self._expected.get(exp.id)
        if waiting is not None and exp in waiting:
            waiting.remove(exp)
            if not waiting:
                del self._expected[exp.id]

    def _locked(self, change: Callable[[], None]) -> None:
        """Make ``change`` under the lock, or leave it to the lock's next holder.

        A finalizer (a dropped ``Reply`` cancels its ``Expectation``) runs in whichever thread
        a garbage collection happens, and that can be inside one of this hub's own locked
        sections: it must never wait for a lock its thread holds. So the wait is short, and a
        change that does not get the lock in time is made by the next ``publish``.
        """
        self._later.append(change)
        if self._lock.acquire(timeout=_LOCK_WAIT):
            try:
                self._run_later()
            finally:
                self._lock.release()

    def _run_later(self) -> None:
        # Under the lock.
        while self._later:
            try:
                change = self._later.popleft()
            except IndexError:
                return
            change()

    def mark(self) -> int:
        """A point in the settle log, to ask ``settled_since`` about later."""
        with self._lock:
            return self._settles

    def settled_since(self, id: str, mark: int) -> bool:
        """Whether promise ``id`` may have been settled after ``mark``: ``False`` only when
        every settle announced here since then is remembered and none was of ``id``.
        """
        with self._lock:
            if mark < self._resynced or self._settles - mark >= SETTLE_LOG:
                return True
            at = self._settled.get(id)
            return at is not None and at > mark

    def subscribe(self, kind: EventKind, keys: Iterable[str], callback: Callback) -> Subscription:
        """Call ``callback`` whenever an event of ``kind`` for one of ``keys`` is published."""
        token = next(self._tokens)
        keys = tuple(keys)
        with self._lock:
            for key in keys:
                self._subs.setdefault((kind, key), {})[token] = callback
        return Subscription(self, token, kind, keys)

    def publish(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` to their subscribers."""
        calls: list[tuple[Callback, EventKind, str]] = []
        woken: list[Expectation] = []
        with self._lock:
            self._run_later()
            for event in events:
                kind, key = event[0], event[1]
                if kind is EventKind.SETTLED:
                    self._log_settle(key)
                    for exp in self._expected.pop(key, ()):
                        exp._held = False
                        if len(event) > 2:
                            exp.promise = event[2]
                        woken.append(exp)
                for sub_key in (key, ""):
                    subs = self._subs.get((kind, sub_key))
                    if subs:
                        calls.extend((cb, kind, key) for cb in subs.values())
        for exp in woken:
            exp.woken.set()
        for callback, kind, key in calls:
            self._call(callback, kind, key, False)

    def settling(self, keys: list[str], on: bool) -> None:
        """Note that the writer of this process commits settles of ``keys`` (``on``) or is done with
        them: a NOTIFY of one heard meanwhile waits, so that the writer's own event, which
        carries the settled record, comes first (an ``Expectation`` then reads nothing).
        """
        with self._lock:
            for key in keys:
                if on:
                    self._settling[key] = self._settling.get(key, 0) + 1
                elif self._settling.get(key, 0) > 1:
                    self._settling[key] -= 1
                else:
                    self._settling.pop(key, None)
            if on or not self._held:
                return
            held = [e for e in self._held if e[1] not in self._settling]
            self._held = [e for e in self._held if e[1] in self._settling]
        self.publish(held)

    def heard(self, event: Event) -> None:
        """Publish an event heard from the database (a NOTIFY), unless it waits (``settling``)."""
        if event[0] is EventKind.SETTLED:
            with self._lock:
                if event[1] in self._settling:
                    self._held.append(event)
                    return
        self.publish((event,))

    def _log_settle(self, key: str) -> None:
        self._settles += 1
        self._settled[key] = self._settles
        self._settled.move_to_end(key)
        if len(self._settled) > SETTLE_LOG:
            self._settled.popitem(last=False)

    def resync(self) -> None:
        """Tell every subscriber that events may have been missed."""
        with self._lock:
            self._settles += 1
            self._resynced = self._settles  # any earlier mark may have missed a settle
            calls = [
                (cb, kind, key) for (kind, key), subs in self._subs.items() for cb in subs.values()
            ]
            woken = [exp for waiting in self._expected.values() for exp in waiting]
        for exp in woken:
            exp.woken.set()  # still expected: its waiter reads, and waits again if need be
        for callback, kind, key in calls:
            self._call(callback, kind, key, True)

    def _remove(self, sub: Subscription) -> None:
        self._locked(functools.partial(self._remove_now, sub))

    def _remove_now(self, sub: Subscription) -> None:
        for key in sub.keys:
            subs = self._subs.get((sub.kind, key))
            if subs is not None:
                subs.pop(sub._token, None)
                if not subs:
                    del self._subs[(sub.kind, key)]

    @staticmethod
    def _call(callback: Callback, kind: EventKind, key: str, resync: bool) -> None:
        try:
            callback(kind, key, resync)
        except StoreError as exc:
            # The database is away: one line, no traceback (the subscriber is resynced when
            # the listener is back).
            log.warning(
                "promissory: a subscriber of %r events could not reach the store: %s",
                kind,
                describe(exc),
            )
        except Exception:
            log.exception("promissory: a store event callback failed")
