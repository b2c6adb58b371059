"""What the web view reads: every SQL statement of the view is in this module.

Each function takes a ``Store`` and reads through ``Store.read`` (a pooled connection, retried
when the database is away), returning plain records. Actors' statuses use the very query that
``promissory tree`` uses, so both say the same words.

Example:
    >>> rows, more = forest(store, root=None, status="waiting", limit=100)  # doctest: +SKIP

"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from ._promises import COLUMNS, prefix_bounds, promise_from_row
from ._reads import _DESCRIBED
from ._records import Promise
from ._store import Store


class ActorRow(msgspec.Struct, frozen=True, kw_only=True):
    """One actor as the forest shows it.

    Attributes:
        id: the actor id.
        parent: its parent's id, if any.
        kind: its class, ``module:Class``.
        status: where it is, in ``promissory tree``'s words.
        restarts: restarts so far (its incarnation).
        pending: pending messages in its mailbox.
        node: the node that hosts (or last hosted) it.
        hosted: whether that node is alive.
        spec: its child spec (restart type, intensity, period, backoff) as JSON.
        history: the times (epoch seconds) of its recent restarts by the runtime's policy.
        restart_at: the end of the backoff it waits out, when restarting.
        supervisor: whether it is a supervisor.
        supervisor_history: a supervisor's own window: its children's recent restarts.
        now: the database's clock when this was read (epoch seconds).

    """

    id: str
    parent: str | None
    kind: str
    status: str
    restarts: int
    pending: int
    node: str | None
    hosted: bool
    spec: dict[str, Any]
    history: list[float]
    restart_at: datetime | None
    supervisor: bool
    supervisor_history: list[float] | None
    now: float


_SUBTREE = (
    "SELECT id FROM actors WHERE id = %(root)s UNION ALL "
    "SELECT a.id FROM actors a JOIN chosen c ON a.parent = c.id"
)
_FOREST = """
WITH RECURSIVE chosen AS ({chosen}), {described}
SELECT id, parent, kind, word, restarts, pending, node, hosted, spec, history, restart_at,
       coalesce(supervisor, false),
       CASE WHEN supervisor THEN state->'history' END,
       extract(epoch FROM clock_timestamp())
FROM described
WHERE %(status)s::text IS NULL OR word = %(status)s
ORDER BY seq LIMIT %(limit)s
"""


def forest(
    store: Store, root: str | None, status: str | None, limit: int
) -> tuple[list[ActorRow], bool]:
    """The actors of every tree (or of the tree under ``root``) in start order, at most
    ``limit``, with or without a ``status``; and whether some were left out.
    """
    chosen = _SUBTREE if root else "SELECT id FROM actors"
    query = _FOREST.format(chosen=chosen, described=_DESCRIBED)
    params = {"root": root, "status": status or None, "limit": limit + 1}
    rows = store.read(lambda conn: conn.execute(query, params).fetchall())
    out = [
        ActorRow(
            id=r[0],
            parent=r[1],
            kind=r[2],
            status=r[3],
            restarts=r[4],
            pending=r[5],
            node=r[6],
            hosted=bool(r[7]),
            spec=_json(r[8]) or {},
            history=list(_json(r[9]) or []),
            restart_at=r[10],
            supervisor=bool(r[11]),
            supervisor_history=_json(r[12]),
            now=float(r[13]),
        )
        for r in rows[:limit]
    ]
    return out, len(rows) > limit


def _json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return msgspec.json.decode(bytes(value))
    return value


_UNDER = f"""
SELECT {COLUMNS} FROM promises
WHERE id = %(id)s OR (id >= %(low)s AND (%(high)s::text IS NULL OR id < %(high)s))
ORDER BY seq LIMIT %(limit)s
"""


def under(store: Store, id: str, limit: int = 5000) -> tuple[list[Promise], bool]:
    """The promise ``id`` and the promises under it (its steps, its sub-runs' steps…), in
    creation order, at most ``limit``; and whether some were left out.
    """
    low, high = prefix_bounds(id + "/")
    params = {"id": id, "low": low, "high": high, "limit": limit + 1}

    def read(conn: psycopg.Connection[Any]) -> list[Promise]:
        return [promise_from_row(r) for r in conn.execute(_UNDER, params).fetchall()]

    rows = store.read(read)
    return rows[:limit], len(rows) > limit


class Extra(msgspec.Struct, frozen=True, kw_only=True):
    """What a promise's row holds besides what ``Promise`` has.

    Attributes:
        owner: the run (message) it belongs to, for a promise a handler created or waited on.
        awaiting: for a suspended message, the promises its handler waits on.
        waiters: the pending messages whose handlers wait on this promise.

    """

    owner: str | None = None
    awaiting: list[str] = []
    waiters: list[str] = []


_EXTRA = """
SELECT id, owner, awaiting FROM promises WHERE id = ANY(%(ids)s)
"""
_WAITERS = """
SELECT id, awaiting FROM promises
WHERE state = 'pending' AND awaiting IS NOT NULL AND awaiting && %(ids)s::text[]
ORDER BY seq
"""


def extras(store: Store, ids: Sequence[str]) -> dict[str, Extra]:
    """For each of ``ids``: its owner, what it awaits, and who waits on it (two queries)."""
    if not ids:
        return {}
    params = {"ids": list(ids)}

    def read(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
        return (
            conn.execute(_EXTRA, params).fetchall(),
            conn.execute(_WAITERS, params).fetchall(),
        )

    own, waiting = store.read(read)
    waiters: dict[str, list[str]] = {}
    for message, awaiting in waiting:
        for target in awaiting or ():
            waiters.setdefault(target, []).append(message)
    return {
        id: Extra(owner=owner, awaiting=list(awaiting or []), waiters=waiters.get(id, []))
        for id, owner, awaiting in own
    }


_CHILDREN = f"""
SELECT {COLUMNS} FROM promises
WHERE id >= %(low)s AND (%(high)s::text IS NULL OR id < %(high)s)
  AND strpos(substr(id, %(cut)s), '/') = 0
ORDER BY seq LIMIT %(limit)s
"""


def children(store: Store, id: str, limit: int = 200) -> list[Promise]:
    """The promises directly under ``id`` (one more path segment), in creation order."""
    low, high = prefix_bounds(id + "/")
    params = {"low": low, "high": high, "cut": len(id) + 2, "limit": limit}

    def read(conn: psycopg.Connection[Any]) -> list[Promise]:
        return [promise_from_row(r) for r in conn.execute(_CHILDREN, params).fetchall()]

    return store.read(read)


_ACTOR_KIND = "SELECT kind, status FROM actors WHERE id = %s"


def actor_kind(store: Store, id: str) -> tuple[str, str] | None:
    """An actor's class and stored status, if it exists."""
    row = store.read(lambda conn: conn.execute(_ACTOR_KIND, (id,)).fetchone())
    return (str(row[0]), str(row[1])) if row else None


def now(store: Store) -> datetime:
    """The database's clock."""
    row = store.read(lambda conn: conn.execute("SELECT clock_timestamp()").fetchone())
    assert row is not None
    value: datetime = row[0]
    return value


_CHANGES = """
SELECT pg_sequence_last_value(pg_get_serial_sequence('promises', 'seq')::regclass),
       (SELECT count(*) FROM actors), (SELECT max(updated_at) FROM actors)
"""


def changes(store: Store) -> tuple[Any, ...]:
    """A value that differs whenever a promise or an actor was made, or an actor changed.

    One cheap statement: the promises' sequence (no scan) and the actors' table. Settles are
    not in it: the store's NOTIFY says those.
    """
    row = store.read(lambda conn: conn.execute(_CHANGES).fetchone())
    return tuple(row) if row else ()


_SCOPED = """
SELECT count(*), max(seq), count(settled_at) FROM promises
WHERE id = %(id)s OR (id >= %(low)s AND (%(high)s::text IS NULL OR id < %(high)s))
"""


def scoped_changes(store: Store, prefix: str) -> tuple[Any, ...]:
    """A value that differs when a promise under ``prefix`` is made or settled."""
    low, high = prefix_bounds(prefix.rstrip("/") + "/")
    params = {"id": prefix.rstrip("/"), "low": low, "high": high}
    row = store.read(lambda conn: conn.execute(_SCOPED, params).fetchone())
    return tuple(row) if row else ()


_MAILBOX = f"""
SELECT {COLUMNS} FROM promises
WHERE recipient = %s AND state = 'pending' ORDER BY seq LIMIT %s
"""


def mailbox(store: Store, actor_id: str, limit: int = 200) -> list[Promise]:
    """An actor's pending messages, in the order it handles them."""

    def read(conn: psycopg.Connection[Any]) -> list[Promise]:
        return [promise_from_row(r) for r in conn.execute(_MAILBOX, (actor_id, limit)).fetchall()]

    return store.read(read)


def version(store: Store, watch: str) -> str:
    """A short stamp of what a page that follows ``watch`` (an id prefix, or ``*``) shows: a
    live stream started later compares it with the stamp then, and so misses nothing that
    changed between the page's answer and the stream's start.
    """
    seen = changes(store) if watch == "*" else scoped_changes(store, watch)
    return hashlib.blake2b(repr(seen).encode(), digest_size=8).hexdigest()
