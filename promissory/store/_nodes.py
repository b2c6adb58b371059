"""Nodes and their leases: which process hosts which actors, and noticing when one is gone.

A node holds a session advisory lock keyed by its id for as long as it lives, on a connection
of its own. Postgres releases the lock the moment that session ends (the process exited or
was killed, or the connection was cut), so another node tells a dead node from a live one by
trying the lock: if it gets it, the node is gone and its actors can be adopted. Adoption is a
conditional update, so two nodes adopting at once share the work without doubling it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import psycopg

from ._connection import backoff_delay, connect
from ._store import Store

log = logging.getLogger("promissory.store")


def new_node_id() -> str:
    """A fresh node id: host, process id and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def node_lock_key(node_id: str) -> int:
    """The advisory-lock key a node holds while it lives."""
    digest = hashlib.sha1(f"promissory:node:{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_connection(dsn: str, node_id: str, timeout: float) -> psycopg.Connection[Any]:
    """A connection of its own holding ``node_id``'s advisory lock (the node's lease)."""
    conn = connect(dsn, deadline=time.monotonic() + timeout, what="the node lease")
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (node_lock_key(node_id),))
    except BaseException:
        conn.close()
        raise
    return conn


class NodeLease:
    """A node's row and the advisory lock that says it is alive.

    If the lock's connection is lost, the lease reconnects and takes the lock again; until then
    other nodes may adopt this node's actors, and the epochs they claim fence off this node's
    writes for those actors.
    """

    def __init__(
        self,
        store: Store,
        node_id: str | None = None,
        *,
        locked: psycopg.Connection[Any] | None = None,
    ) -> None:
        """Take the lease (``locked``: a connection that already holds this node's lock, from
        ``lock_connection``) and record the node.
        """
        self.store = store
        self.node_id = node_id or new_node_id()
        self.key = node_lock_key(self.node_id)
        self._conn: psycopg.Connection[Any] | None = locked
        self._stop = threading.Event()
        if locked is None:
            self._lock_once()
        store.read(
            lambda conn: conn.execute(
                "INSERT INTO nodes (id, lock_key, pid, host) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING",
                (self.node_id, self.key, os.getpid(), socket.gethostname()),
            )
        )
        self._thread = threading.Thread(target=self._watch, name="promissory-lease", daemon=True)
        self._thread.start()

    def _lock_once(self) -> None:
        self._conn = lock_connection(self.store.dsn, self.node_id, self.store.reconnect_timeout)

    def _watch(self) -> None:
        attempt = 0
        while not self._stop.wait(1.0):
            conn = self._conn
            try:
                if conn is None or conn.closed or conn.broken:
                    raise psycopg.OperationalError("lease connection lost")
                conn.execute("SELECT 1")
                attempt = 0
            except (psycopg.Error, Exception):
                if self._stop.is_set():
                    return
                log.warning("promissory node %s lost its lease connection; retaking", self.node_id)
                try:
                    if conn is not None:
                        conn.close()
                    self._lock_once()
                except Exception:
                    time.sleep(backoff_delay(attempt))
                    attempt += 1

    def release(self, *, release_actors: bool) -> None:
        """End the lease; with ``release_actors`` hand this node's actors back first."""
        self._stop.set()
        if release_actors:
            # Hand the actors back, and tell the other nodes about those with messages still
            # waiting, so a live node takes them up now rather than at its next start.
            release = (
                "WITH released AS (UPDATE actors SET node = NULL WHERE node = %s RETURNING id) "
                "SELECT pg_notify(%s, 'm' || r.id || chr(9) || '0') FROM released r "
                "WHERE EXISTS (SELECT 1 FROM promises p "
                "WHERE p.recipient = r.id AND p.state = 'pending')"
            )
            params = (self.node_id, self.store.channel)
            self.store.read(lambda conn: conn.execute(release, params).fetchall())
        self.store.read(
            lambda conn: conn.execute("DELETE FROM nodes WHERE id = %s", (self.node_id,))
        )
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._thread.join(3)


def adopt_dead_nodes(store: Store, me: str) -> list[str]:
    """Release the actors of every node whose lock is free (it is gone); return those nodes.

    Their actors get ``node = NULL``, so the next claim (this node's recovery, or any node a
    message reaches) activates them.
    """

    def adopt(conn: psycopg.Connection[Any]) -> list[str]:
        dead: list[str] = []
        rows = conn.execute(
            "SELECT id, lock_key FROM nodes WHERE id <> %s "
            "UNION SELECT DISTINCT a.node, NULL::bigint FROM actors a "
            "WHERE a.node IS NOT NULL AND a.node <> %s "
            "AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = a.node)",
            (me, me),
        ).fetchall()
        for node_id, key in rows:
            if key is None:
                # An actor held by a node with no row: its node row was already cleaned up.
                conn.execute("UPDATE actors SET node = NULL WHERE node = %s", (node_id,))
                dead.append(node_id)
                continue
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not got or not got[0]:
                continue
            try:
                conn.execute("UPDATE actors SET node = NULL WHERE node = %s", (node_id,))
                conn.execute("DELETE FROM nodes WHERE id = %s", (node_id,))
                dead.append(node_id)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return dead

    return store.read(adopt)
