"""Nodes and their leases: which process hosts which actors, and noticing when one is gone.

A node holds a session advisory lock keyed by its id for as long as it lives, on a connection
of its own (its lease). Postgres releases the lock the moment that session ends: the process
exited or was killed, the connection was cut, or it fell silent (the lease connection sets
``idle_session_timeout`` and TCP keepalives, so a paused or cut-off node loses its lease within
``LEASE_SILENCE`` seconds). Live nodes are read from ``pg_locks`` without taking anything; a
node whose lock is free is dead, and ``adopt_node`` hands its actors back (``node = NULL``) for
the live nodes that can host them. Adoption is conditional (it takes the dead node's lock
first), so two nodes adopting at once share the work without doubling it.

A node's row keeps what it hosts (``kinds``, actor type names) and, once it is gone, when
(``ended_at``), so ``promissory nodes`` shows the recently dead too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from ..errors import StoreError
from ._connection import close_quietly, connect
from ._outage import describe
from ._store import Store

log = logging.getLogger("promissory.store")

_checked: set[str] = set()
"""DSNs whose sessions were found not shared (checked once per process)."""

LEASE_SILENCE = 6.0
"""Seconds of silence after which Postgres ends a lease session (``idle_session_timeout``,
and TCP keepalives on TCP connections): the longest a paused or cut-off node keeps its lease.
The lease pings every ``LEASE_PING`` seconds, so a live node is never that quiet."""
LEASE_PING = 0.25
"""Seconds between the lease's checks of its own session. A handler about to do new durable
work trusts the lease for ``LEASE_TRUST`` seconds after the last answer, and asks the session
itself past that; other nodes wait longer than that (``Runtime(adopt_grace=)``) before they
adopt a node they saw alive."""
LEASE_TRUST = 0.4
"""Seconds a lease's last answer is trusted without asking again (see ``LEASE_PING``), counted
from when the question was sent, so a slow answer never stretches it."""

__all__ = [
    "LEASE_PING",
    "LEASE_SILENCE",
    "LEASE_TRUST",
    "NodeInfo",
    "NodeLease",
    "adopt_node",
    "dead_nodes",
    "live_nodes",
    "lock_connection",
    "new_node_id",
    "node_listing",
]


class NodeInfo(msgspec.Struct, frozen=True):
    """A node as the fleet sees it."""

    id: str
    kinds: list[str]
    """The actor types it hosts."""
    host: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    live: bool = True
    actors: int = 0
    """How many actors it holds now."""


def new_node_id() -> str:
    """A fresh node id: host, process id and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def node_lock_key(node_id: str) -> int:
    """The advisory-lock key a node holds while it lives."""
    digest = hashlib.sha1(f"promissory:node:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_connection(dsn: str, node_id: str, timeout: float) -> psycopg.Connection[Any]:
    """A connection of its own holding ``node_id``'s advisory lock (the node's lease).

    The session ends itself after ``LEASE_SILENCE`` seconds without a statement (and, over
    TCP, when keepalives go unanswered), so the lock cannot outlive a node that stopped.

    Raises:
        StoreError: the DSN goes through a transaction-mode pooler, where a session's lock and
            LISTEN do not stay with the client (see ``check_session_pooling``).

    """
    conn = connect(
        dsn,
        deadline=time.monotonic() + timeout,
        what="the node lease",
        keepalives=True,
    )
    try:
        try:
            conn.execute(f"SET idle_session_timeout = {int(LEASE_SILENCE * 1000)}")
        except psycopg.errors.UndefinedObject:
            log.warning(
                "PostgreSQL before 14 has no idle_session_timeout: a paused node keeps its "
                "lease until its connection dies"
            )
        for name, value in (("idle", 2), ("interval", 1), ("count", 3)):
            # Over a Unix socket these do nothing; over TCP they make the server notice a
            # cut-off client.
            conn.execute(f"SET tcp_keepalives_{name} = {value}")
        conn.execute("SELECT pg_advisory_lock(%s)", (node_lock_key(node_id),))
        if dsn not in _checked:
            check_session_pooling(dsn, conn, node_id)
            _checked.add(dsn)
    except BaseException:
        conn.close()
        raise
    return conn


def check_session_pooling(dsn: str, conn: psycopg.Connection[Any], node_id: str) -> None:
    """Refuse a DSN whose connections do not keep their server session (a transaction-mode
    pooler such as PgBouncer with ``pool_mode = transaction``).

    The lease's connection sets a marker in its session; another connection must not see it,
    and the lease's own next transactions must: a pooler handing sessions between clients
    breaks one or the other within a few rounds.

    Raises:
        StoreError: the sessions are shared, with what to use instead.

    """
    marker = f"{node_id}:{uuid.uuid4().hex[:8]}"
    conn.execute("SELECT set_config('promissory.session', %s, false)", (marker,))
    other = connect(dsn, deadline=time.monotonic() + 5, what="the pooler check")
    try:
        for _ in range(3):
            seen = other.execute("SELECT current_setting('promissory.session', true)").fetchone()
            own = conn.execute("SELECT current_setting('promissory.session', true)").fetchone()
            if (seen and seen[0] == marker) or not own or own[0] != marker:
                raise StoreError(
                    "the database connection goes through a pooler in transaction mode (its "
                    "server sessions are shared between clients): a node's lease (a session "
                    "advisory lock) and its LISTEN cannot work there. Connect promissory "
                    "directly to PostgreSQL, or through a session-mode pool "
                    "(PgBouncer: pool_mode = session)"
                )
    finally:
        other.close()


_LIVE = """
SELECT n.id, n.kinds FROM nodes n JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND ((l.classid::bigint << 32) | l.objid::bigint) = n.lock_key
WHERE n.ended_at IS NULL
ORDER BY n.id
"""
_SUSPECTS = """
SELECT id, lock_key FROM nodes WHERE ended_at IS NULL AND id <> ALL(%s)
UNION
SELECT DISTINCT a.node, NULL::bigint FROM actors a
WHERE a.node IS NOT NULL AND a.node <> ALL(%s)
  AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = a.node AND n.ended_at IS NULL)
"""
_LISTING = f"""
WITH live AS ({_LIVE.replace("ORDER BY n.id", "")})
SELECT n.id, n.kinds, n.host, n.pid, n.started_at, n.ended_at,
       live.id IS NOT NULL,
       (SELECT count(*) FROM actors a WHERE a.node = n.id AND a.status IN
            ('running', 'restarting'))
FROM nodes n LEFT JOIN live ON live.id = n.id
WHERE n.ended_at IS NULL OR n.ended_at > clock_timestamp() - %s * interval '1 second'
ORDER BY live.id IS NULL, n.started_at
"""


def live_nodes(store: Store) -> list[NodeInfo]:
    """The nodes whose lease is held now, with what each hosts (``pg_locks``; takes nothing)."""
    rows = store.read(lambda conn: conn.execute(_LIVE).fetchall(), background=True)
    return [NodeInfo(id=r[0], kinds=list(r[1] or ())) for r in rows]


def dead_nodes(store: Store, live: Sequence[str]) -> list[tuple[str, int | None]]:
    """Nodes that may be dead (not in ``live``), as (id, lock key): rows not ended, and nodes
    that hold actors but have no row (``None`` key).
    """
    ids = list(live)
    rows = store.read(lambda conn: conn.execute(_SUSPECTS, (ids, ids)).fetchall(), background=True)
    return [(r[0], r[1]) for r in rows]


def adopt_node(store: Store, node_id: str, key: int | None) -> int | None:
    """If node ``node_id`` is dead (its lock can be taken), hand its actors back
    (``node = NULL``, for the placement to give to live nodes), mark it ended, and tell every
    node (``adopted``, on the store's channel) so each takes up its share now; return how many
    actors it held, or ``None`` if it is alive after all.
    """

    def adopt(conn: psycopg.Connection[Any]) -> int | None:
        if key is not None:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not got or not got[0]:
                return None
        try:
            with conn.transaction():
                released = conn.execute(
                    "UPDATE actors SET node = NULL WHERE node = %s", (node_id,)
                ).rowcount
                conn.execute(
                    "UPDATE nodes SET ended_at = clock_timestamp() "
                    "WHERE id = %s AND ended_at IS NULL",
                    (node_id,),
                )
                conn.execute("SELECT pg_notify(%s, 'a' || %s)", (store.channel, node_id))
            return released
        finally:
            if key is not None:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    return store.read(adopt)


def node_listing(store: Store, recent: float = 3600.0) -> list[NodeInfo]:
    """Live nodes, and those that ended less than ``recent`` seconds ago, with what each
    hosts and how many actors it holds.
    """
    rows = store.read(lambda conn: conn.execute(_LISTING, (recent,)).fetchall())
    return [
        NodeInfo(
            id=r[0],
            kinds=list(r[1] or ()),
            host=r[2],
            pid=r[3],
            started_at=r[4],
            ended_at=r[5],
            live=bool(r[6]),
            actors=int(r[7]),
        )
        for r in rows
    ]


class NodeLease:
    """A node's row and the advisory lock that says it is alive.

    The lease checks its own session every ``LEASE_PING`` seconds. When the session is gone
    (killed, cut off, silent too long), other nodes may have adopted this node's actors, and
    the epochs they claimed fence off this node's writes for them: the lease does not take the
    lock again under the same id, it calls ``on_lost`` once, and the node rejoins as a new one.
    """

    def __init__(
        self,
        store: Store,
        node_id: str | None = None,
        *,
        locked: psycopg.Connection[Any] | None = None,
        kinds: Sequence[str] = (),
        on_lost: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Take the lease (``locked``: a connection that already holds this node's lock, from
        ``lock_connection``) and record the node with the types it hosts.
        """
        self.store = store
        self.node_id = node_id or new_node_id()
        self.key = node_lock_key(self.node_id)
        self.on_lost = on_lost
        self.lost: BaseException | None = None
        self._conn: psycopg.Connection[Any] = locked or lock_connection(
            store.dsn, self.node_id, store.reconnect_timeout
        )
        self._kinds = sorted(set(kinds))
        self._stop = threading.Event()
        self._checking = threading.Lock()
        self.last_ok = time.monotonic()
        """When the lease's session last answered (monotonic)."""
        store.read(
            lambda conn: conn.execute(
                "INSERT INTO nodes (id, lock_key, pid, host, kinds) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET kinds = EXCLUDED.kinds, ended_at = NULL",
                (self.node_id, self.key, os.getpid(), socket.gethostname(), self._kinds),
            )
        )
        self._thread = threading.Thread(target=self._watch, name="promissory-lease", daemon=True)
        self._thread.start()

    @property
    def held(self) -> bool:
        """Whether the lease is still this node's (its session lives)."""
        return self.lost is None and not self._stop.is_set()

    def verified(self, max_age: float = LEASE_TRUST) -> bool:
        """Whether the lease is this node's, asking its session now if it last answered more
        than ``max_age`` seconds ago (after the process was paused, say): a handler about to do
        new durable work finds out before the work, not after another node adopted its actor.
        """
        if self.lost is not None:
            return False
        if time.monotonic() - self.last_ok <= max_age:
            return True
        self._ping()
        return self.lost is None

    def set_kinds(self, kinds: Sequence[str]) -> None:
        """Record what this node hosts now (types defined after it opened)."""
        new = sorted(set(kinds))
        if new == self._kinds:
            return
        self._kinds = new
        self.store.read(
            lambda conn: conn.execute(
                "UPDATE nodes SET kinds = %s WHERE id = %s", (new, self.node_id)
            ),
            background=True,  # the fleet's own upkeep, not a read for work (``Store.reads``)
        )

    def _watch(self) -> None:
        while not self._stop.wait(LEASE_PING) and self.lost is None:
            self._ping()

    def _ping(self) -> None:
        with self._checking:
            if self.lost is not None or self._stop.is_set():
                return
            asked = time.monotonic()
            try:
                self._conn.execute("SELECT 1")
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.lost = exc
            else:
                # The session was alive when asked; whatever came after, no one may know.
                self.last_ok = asked
                return
        log.warning(
            "promissory node %s lost its lease (%s): other nodes may adopt its actors; "
            "every activation here is fenced off",
            self.node_id,
            describe(self.lost),
        )
        close_quietly(self._conn, "the node lease")
        if self.on_lost is not None:
            self.on_lost(self.lost)

    def release(self, *, release_actors: bool) -> None:
        """End the lease; with ``release_actors`` hand this node's actors back first, and tell
        the other nodes about those with messages waiting, so a live node takes them up now.
        """
        self._stop.set()
        if release_actors and self.lost is None:
            # The payload is a new message's (see the schema's promissory_notify): no holder.
            release = (
                "WITH released AS (UPDATE actors SET node = NULL WHERE node = %s "
                "RETURNING id, kind) "
                "SELECT pg_notify(%s, 'm' || r.id || chr(9) || '0' || chr(9) || '' || chr(9) "
                "|| r.kind) FROM released r "
                "WHERE EXISTS (SELECT 1 FROM promises p "
                "WHERE p.recipient = r.id AND p.state = 'pending')"
            )
            params = (self.node_id, self.store.channel)
            try:
                self.store.read(lambda conn: conn.execute(release, params).fetchall())
            except StoreError as exc:
                log.warning(
                    "promissory node %s could not hand its actors over: %s",
                    self.node_id,
                    describe(exc),
                )
        try:
            self.store.read(
                lambda conn: conn.execute(
                    "UPDATE nodes SET ended_at = clock_timestamp() WHERE id = %s",
                    (self.node_id,),
                )
            )
        except StoreError as exc:
            log.warning(
                "promissory node %s could not record its end: %s", self.node_id, describe(exc)
            )
        close_quietly(self._conn, "the node lease")
        if threading.current_thread() is not self._thread:
            self._thread.join(3)
