"""The node's view of the fleet: who is alive, whose actors are whose, and adopting the dead.

Every ``interval`` seconds (``Runtime(adopt_interval=)``, 0.25 s by default) a thread reads
the live nodes (their leases, from ``pg_locks``) and what each hosts. A node whose lease is gone
is adopted: its actors are handed back (``node = NULL``) and every live node runs the recovery
pass, taking up those the placement gives it among the nodes that host their type. A node seen
alive and then gone is adopted only after ``grace`` seconds, longer than that node takes to
notice its own lost lease and fence off its activations, so no actor runs on two nodes at once;
one already gone when this node starts is adopted at once. Now and then (``rescan``) the pass
runs anyway, a safety net for a notification lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..actors import types_version
from ..store import (
    STORE_FAULTS,
    NodeInfo,
    Store,
    adopt_node,
    dead_nodes,
    describe,
    live_nodes,
)
from ._placement import chosen_node

log = logging.getLogger("promissory.runtime")

__all__ = ["Fleet"]


class Fleet:
    """A node's view of the fleet (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        node_id: Callable[[], str],
        hosted: Callable[[], list[str]],
        *,
        take_up: Callable[[list[str]], None],
        publish: Callable[[list[str]], None],
        interval: float = 0.25,
        grace: float = 0.6,
        rescan: float = 10.0,
    ) -> None:
        self.store = store
        self._node_id = node_id
        self._hosted = hosted
        self._take_up = take_up
        self._publish = publish
        self.interval = interval
        self.grace = grace
        self.rescan = rescan
        self._lock = threading.Lock()
        self._live: list[NodeInfo] = []
        self._seen_alive: set[str] = set()
        self._gone_since: dict[str, float] = {}
        self._adopting: dict[str, bool] = {}
        """Dead nodes this node adopts or adopted (its own pass takes their actors up), each
        with whether the notice of an adoption of it came (see ``heard_adoption``)."""
        self._missed: list[str] = []
        """Adopted nodes whose take-up failed: the next look takes them up."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._types_version = -1
        self._last_scan = time.monotonic()

    # -- what is whose -------------------------------------------------------------------------

    @property
    def live(self) -> list[NodeInfo]:
        """The live nodes as last read."""
        with self._lock:
            return list(self._live)

    def mine(self, actor_id: str, kind: str, holder: str | None) -> bool:
        """Whether this node should run ``actor_id`` (of type ``kind``, held by ``holder``)."""
        me = self._node_id()
        if holder is not None:
            return holder == me and kind in self._hosted_set()
        if kind not in self._hosted_set():
            return False
        live = self.live
        if not any(n.id == me for n in live):
            # Not listed yet (just started, or the list is stale): count this node in.
            live.append(NodeInfo(id=me, kinds=sorted(self._hosted_set())))
        return chosen_node(actor_id, kind, live) == me

    def _hosted_set(self) -> set[str]:
        return set(self._hosted())

    # -- the watch -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching (after the first ``tick``, which the runtime runs while it opens)."""
        self._thread = threading.Thread(target=self._run, name="promissory-fleet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (a closing node adopts nothing more)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _next_look(self) -> float:
        """Seconds until the next look: ``interval``, or less when a node's grace ends first
        (so it is adopted when its grace ends, not up to an interval later).
        """
        with self._lock:
            ends = [since + self.grace for since in self._gone_since.values()]
        if not ends:
            return self.interval
        return max(0.005, min(self.interval, min(ends) - time.monotonic()))

    def _run(self) -> None:
        while not self._stop.wait(self._next_look()):
            try:
                self.tick()
            except STORE_FAULTS as exc:
                log.debug("promissory fleet: the database is away (%s)", describe(exc))
            except Exception:
                log.exception("promissory fleet: looking at the nodes failed")

    def tick(self, *, first: bool = False) -> list[str]:
        """Read the live nodes, adopt the dead ones, and take up what is now this node's;
        return the nodes adopted.
        """
        version = types_version()
        if version != self._types_version:
            self._types_version = version
            self._publish(sorted(self._hosted_set()))
        live = live_nodes(self.store)
        ids = [n.id for n in live]
        now = time.monotonic()
        with self._lock:
            self._live = live
            self._seen_alive.update(ids)
            for node in ids:
                self._gone_since.pop(node, None)
        adopted: list[str] = []
        others: list[str] = []
        for node, key in dead_nodes(self.store, ids):
            if node == self._node_id():
                continue
            if node in self._seen_alive and not first:
                # Seen alive, now gone: give it the time to see that itself and stop.
                since = self._gone_since.setdefault(node, now)
                if now - since < self.grace:
                    continue
            with self._lock:  # before the adoption's notice can come back
                self._adopting[node] = False
            try:
                released = adopt_node(self.store, node, key)
            except BaseException:
                # Not adopted here: another node's notice of it must start a pass here.
                with self._lock:
                    self._adopting.pop(node, None)
                raise
            if released is None:
                with self._lock:
                    heard = self._adopting.pop(node)
                if heard:
                    # Another node adopted it meanwhile; its notice, heard while this one
                    # adopted too, started no pass here: this look takes up this node's share.
                    others.append(node)
                continue  # its lock is held after all: alive, or another's to adopt
            with self._lock:
                self._gone_since.pop(node, None)
                self._seen_alive.discard(node)
            adopted.append(node)
            log.info(
                "promissory: node %s is gone; %d of its actors are handed over", node, released
            )
        due = [*self._missed, *adopted, *others]
        if due or first or now - self._last_scan >= self.rescan:
            self._last_scan = now
            try:
                self._take_up(due)
            except BaseException:
                self._missed = due  # the next look takes them up again
                self._last_scan = -self.rescan
                raise
            self._missed = []
        return adopted

    def heard_adoption(self, node: str) -> bool:
        """The notice that ``node`` was adopted came (every node hears it): whether this
        node's own look takes its actors up (it adopts or adopted ``node`` itself, and looks
        again if that failed), so the notice needs no recovery pass of its own.
        """
        with self._lock:
            if node not in self._adopting:
                return False
            self._adopting[node] = True
            return True
