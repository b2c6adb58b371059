"""The store's named reads: every query the layers above need, as a method returning Structs.

SQL lives in this package alone: a schema change touches one place, and no caller indexes a
row by position. ``Store`` inherits these methods (``store.actor_row(id)``,
``store.children_of(id)``, ``store.mailbox(id)``…); ``Store.read`` stays for users' own
queries. Each method is one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import psycopg

from ._actors import ACTOR_COLUMNS, ActorRecord, actor_from_row
from ._promises import COLUMNS, prefix_bounds, promise_from_row
from ._records import Promise

T = TypeVar("T")

__all__ = [
    "ActorDetail",
    "JournalLoad",
    "MailboxEntry",
    "MailboxHead",
    "Reads",
    "TreeRow",
]


class MailboxEntry(msgspec.Struct, frozen=True):
    """A message in an actor's mailbox, and what it waits on if it is suspended."""

    promise: Promise
    awaiting: list[str] | None
    """The promises it waits on (suspended), ``[]`` for a canceled one marked for its cleanup
    replay, ``None`` for a message simply waiting its turn."""
    wait_all: bool
    """It waits on all of ``awaiting`` (a gather), not on the first to settle."""


class JournalLoad(msgspec.Struct, frozen=True):
    """A message with its kept steps, in one read."""

    records: list[Promise]
    """The message and its steps (its direct children)."""
    marked: bool
    """The message is canceled or timed out and still marked for its cleanup replay."""
    earlier: list[Promise]
    """Pending messages to the same actor that came before it (they go first)."""


class EndingView(msgspec.Struct, frozen=True):
    """What ending an actor's tree starts from, in one read (``Store.ending_view``)."""

    record: ActorRecord | None
    """The actor's row (``None``: there is none)."""
    subtree: list[ActorRecord]
    """The alive actors under it, deepest and newest first (the order to end them in)."""
    cleanup_pending: bool
    """It has a canceled or timed-out message still marked for its cleanup replay."""


class MailboxHead(msgspec.Struct, frozen=True):
    """The head of a live actor's mailbox, as the recovery pass reads it."""

    actor: str
    message: str
    awaiting: list[str] | None
    """What the message waits on, if it is suspended (``None``: it is runnable)."""
    wait_all: bool


class TreeRow(msgspec.Struct, frozen=True):
    """One actor as ``tree`` shows it."""

    id: str
    parent: str | None
    kind: str
    status: str
    """The word for where it is (see ``ACTOR_WORDS``)."""
    restarts: int
    pending: int
    node: str | None
    hostable: bool = True
    """Some live node hosts its type (if none does, it waits for one that will)."""


class ActorDetail(msgspec.Struct, frozen=True):
    """One actor as ``show`` shows it."""

    id: str
    parent: str | None
    kind: str
    status: str
    """The word for where it is (see ``ACTOR_WORDS``)."""
    stored_status: str
    incarnation: int
    epoch: int
    node: str | None
    hosted: bool
    """Its node is alive (holds its lease) now."""
    pending: int
    state: msgspec.Raw | None
    created_at: datetime
    updated_at: datetime
    restart_at: datetime | None
    children: int
    hostable: bool = True
    """Some live node hosts its type (if none does, it waits for one that will)."""


ACTOR_WORDS = {
    "running": "hosted by a live node, with messages to handle",
    "waiting": "hosted by a live node; its current message waits on a promise "
    "(a timer, a person, a child)",
    "idle": "hosted by a live node, with nothing to do",
    "unhosted": "alive, but no live node holds it now: a live node that hosts its type takes "
    "it up within moments; with none, it waits, untouched, for a node that does",
    "ending": "its end (a stop or a cancel) is kept but not yet carried out: it ends when a "
    "node hosts it",
    "restarting": "failed; waiting out its backoff before it is restarted",
    "stopped": "stopped on purpose",
    "failed": "given up by its supervisor",
}
"""The words for where an actor is (``tree``, ``show``), and what each means."""


# -- SQL ---------------------------------------------------------------------------------------

_ACTOR = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE id = %s"
_EXITED = f"""
WITH later AS (
    SELECT seq, param->>'child' AS child, tags->>'promissory:type' AS type FROM promises
    WHERE recipient = %(parent)s AND state = 'pending' AND seq > %(after)s
    ORDER BY seq LIMIT %(limit)s
), exits AS (
    SELECT child FROM later
    WHERE seq < coalesce((SELECT min(seq) FROM later WHERE type IS DISTINCT FROM 'ChildExit'),
                         9223372036854775807)
)
SELECT {ACTOR_COLUMNS} FROM actors
WHERE id = ANY(array_append(ARRAY(SELECT child FROM exits), %(child)s::text))
  AND parent = %(parent)s
"""
_CHILDREN = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE parent = %s ORDER BY seq"
_UNDER = """
WITH RECURSIVE tree AS (
    SELECT id, 1 AS depth FROM actors WHERE parent = %(id)s
    UNION ALL
    SELECT a.id, t.depth + 1 FROM actors a JOIN tree t ON a.parent = t.id
)"""
"""Every actor under ``%(id)s``, with its depth below it."""
_SUBTREE = f"""{_UNDER}
SELECT {ACTOR_COLUMNS} FROM actors a JOIN tree USING (id)
WHERE a.status IN ('running', 'restarting')
ORDER BY tree.depth DESC, a.seq DESC
"""
_NOW = "SELECT extract(epoch FROM clock_timestamp())"
_RESTART_DUE_IN = (
    "SELECT extract(epoch FROM restart_at - clock_timestamp()) FROM actors "
    "WHERE id = %s AND status = 'restarting'"
)
_ALIVE_KIND = "SELECT kind FROM actors WHERE id = %s AND status IN ('running', 'restarting')"
_DELETE_ENDED = "DELETE FROM actors WHERE id = %s AND status IN ('stopped', 'failed') RETURNING id"

_MAILBOX = f"""
(SELECT {COLUMNS}, awaiting, wait_all FROM promises
 WHERE recipient = %(actor)s AND state = 'pending' ORDER BY seq LIMIT %(limit)s)
UNION ALL
(SELECT {COLUMNS}, awaiting, wait_all FROM promises
 WHERE recipient = %(actor)s AND state <> 'pending' AND awaiting IS NOT NULL)
ORDER BY seq
"""
MAILBOX_AND_HEAD = f"""
WITH box AS ({_MAILBOX}), head AS (SELECT id FROM box ORDER BY seq LIMIT 1)
SELECT *, false FROM box
UNION ALL
SELECT steps.* FROM head CROSS JOIN LATERAL (
    SELECT {COLUMNS}, awaiting, wait_all, true FROM promises
    WHERE id >= head.id || '/' AND id < head.id || '0'
      AND strpos(substr(id, length(head.id) + 2), '/') = 0
) steps
"""
"""An actor's mailbox (as ``_MAILBOX``) and the kept steps of its head message (its direct
children), in one round trip; the last column says which rows are steps. Its parameters are
``actor`` and ``limit``, its rows read by ``mailbox_and_head_from``."""
_MARKED_WHERE = "recipient = %(id)s AND state <> 'pending' AND awaiting IS NOT NULL"
_MARKED = f"SELECT 1 FROM promises WHERE {_MARKED_WHERE} LIMIT 1"
_ENDING_VIEW = f"""{_UNDER}
SELECT 0 AS part, 0 AS depth, EXISTS (SELECT 1 FROM promises WHERE {_MARKED_WHERE}),
       {ACTOR_COLUMNS}
FROM actors WHERE id = %(id)s
UNION ALL
SELECT 1, tree.depth, false, {ACTOR_COLUMNS} FROM actors a JOIN tree USING (id)
WHERE a.status IN ('running', 'restarting')
ORDER BY part, depth DESC, seq DESC
"""

_LIVE = (
    "SELECT id, kind, node FROM actors WHERE status = 'running' "
    "AND (node IS NULL OR node = %s) ORDER BY seq"
)
_HEADS = """
SELECT DISTINCT ON (p.recipient) p.recipient, p.id,
       CASE WHEN p.state = 'pending' THEN p.awaiting END, p.wait_all
FROM promises p JOIN actors a ON a.id = p.recipient
WHERE p.recipient IS NOT NULL
  AND (p.state = 'pending' OR (p.state <> 'pending' AND p.awaiting IS NOT NULL))
  AND a.status = 'running' AND (a.node IS NULL OR a.node = %s)
ORDER BY p.recipient, p.seq
"""
_STOPPING = (
    "SELECT id, kind, node FROM actors WHERE status = 'running' AND reason ? 'stopping' "
    "AND (node IS NULL OR node = %s)"
)
_RESTARTING = (
    f"SELECT {ACTOR_COLUMNS} FROM actors WHERE status = 'restarting' AND restart_at IS NOT NULL "
    "AND (node IS NULL OR node = %s)"
)
_PLACEMENT = "SELECT kind, node FROM actors WHERE id = %s AND status IN ('running', 'restarting')"
_FINISHED_MESSAGES = """
SELECT p.id FROM promises p JOIN actors a ON a.id = p.recipient
WHERE p.kind = 'message' AND p.state = 'resolved'
ORDER BY p.seq
"""
_NEWEST_UNFINISHED = """
SELECT id FROM promises
WHERE kind = 'message' AND state = 'pending' AND id >= %s AND id < %s
  AND strpos(substr(id, %s), '/') = 0
ORDER BY seq DESC LIMIT 1
"""

# Live nodes: those whose advisory lock is held now (read from pg_locks, taking nothing).
LIVE_NODES = """
SELECT n.id FROM nodes n JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND ((l.classid::bigint << 32) | l.objid::bigint) = n.lock_key
"""
_DESCRIBED = f"""
live AS ({LIVE_NODES}),
described AS (
    SELECT a.*, m.pending, live.id IS NOT NULL AS hosted,
           EXISTS (SELECT 1 FROM live l JOIN nodes n ON n.id = l.id
                   WHERE a.kind = ANY(n.kinds)) AS hostable,
           CASE WHEN a.status <> 'running' THEN a.status
                WHEN a.reason ? 'ending' THEN 'ending'
                WHEN live.id IS NULL THEN 'unhosted'
                WHEN m.pending = 0 THEN 'idle'
                WHEN m.waiting THEN 'waiting'
                ELSE 'running' END AS word
    FROM chosen c JOIN actors a ON a.id = c.id
    LEFT JOIN live ON live.id = a.node
    CROSS JOIN LATERAL (
        SELECT count(*) AS pending, coalesce(bool_or(p.awaiting IS NOT NULL), false) AS waiting
        FROM promises p WHERE p.recipient = a.id AND p.state = 'pending'
    ) m
)
"""
_TREE_SUBTREE = (
    "SELECT id FROM actors WHERE id = %(root)s UNION ALL "
    "SELECT a.id FROM actors a JOIN chosen c ON a.parent = c.id"
)
_TREE = """
WITH RECURSIVE chosen AS ({chosen}), {described}
SELECT id, parent, kind, word, restarts, pending, node, hostable FROM described
WHERE %(status)s::text IS NULL OR word = %(status)s
ORDER BY seq LIMIT %(limit)s
"""
_DETAIL = f"""
WITH RECURSIVE chosen AS (SELECT id FROM actors WHERE id = %(root)s), {_DESCRIBED}
SELECT d.id, d.parent, d.kind, d.word, d.status, d.restarts, d.epoch, d.node, d.hosted,
       d.pending, d.state, d.created_at, d.updated_at, d.restart_at,
       (SELECT count(*) FROM actors c WHERE c.parent = d.id), d.hostable
FROM described d
"""


def journal_query(message_id: str, recipient: str, seq: int) -> tuple[str, tuple[Any, ...]]:
    """The query that loads a message and its steps (its direct children) in one round trip,
    with any pending message to the same actor that came before it (the last column says which).
    """
    prefix = message_id + "/"
    low, high = prefix_bounds(prefix)
    return (
        f"(SELECT {COLUMNS}, awaiting, false FROM promises WHERE id = %s OR (id >= %s AND id < %s "
        "AND strpos(substr(id, %s), '/') = 0))"
        f" UNION ALL (SELECT {COLUMNS}, awaiting, true FROM promises "
        "WHERE recipient = %s AND state = 'pending' AND seq < %s)",
        (message_id, low, high, len(prefix) + 1, recipient, seq),
    )


_AWAITING = len(COLUMNS.split(","))
"""The position of the columns a query adds after ``COLUMNS``."""


def mailbox_and_head_from(rows: Sequence[Any]) -> tuple[list[MailboxEntry], JournalLoad | None]:
    """The rows of ``MAILBOX_AND_HEAD`` as the mailbox and its head message's journal
    (``None`` for an empty mailbox).
    """
    box = [_mailbox_entry(r) for r in rows if not r[_AWAITING + 2]]
    if not box:
        return box, None
    box.sort(key=lambda e: e.promise.seq)
    head = box[0]
    steps = [promise_from_row(r) for r in rows if r[_AWAITING + 2]]
    marked = head.awaiting is not None  # as ``journal`` says it
    return box, JournalLoad([head.promise, *steps], marked, [])


def _mailbox_entry(row: Any) -> MailboxEntry:
    """A mailbox row (``COLUMNS``, then ``awaiting`` and ``wait_all``) as a ``MailboxEntry``."""
    awaiting = row[_AWAITING]
    return MailboxEntry(
        promise_from_row(row),
        list(awaiting) if awaiting is not None else None,
        bool(row[_AWAITING + 1]),
    )


_ENDING = f"""
SELECT {ACTOR_COLUMNS} FROM actors
WHERE status IN ('running', 'restarting') AND reason ? 'ending' AND (node IS NULL OR node = %s)
ORDER BY seq
"""
"""The actors whose end was kept but not finished (recovery finishes it), for a node."""


class Reads:
    """The named reads of ``Store`` (it inherits them); see the module docstring."""

    def read(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        timeout: float | None = None,
        background: bool = False,
    ) -> T:
        raise NotImplementedError  # Store's

    def _rows(
        self, query: str, params: Any = None, background: bool = False
    ) -> list[tuple[Any, ...]]:
        return self.read(lambda conn: conn.execute(query, params).fetchall(), background=background)

    def _row(self, query: str, params: Any = None) -> tuple[Any, ...] | None:
        return self.read(lambda conn: conn.execute(query, params).fetchone())

    # -- the clock -------------------------------------------------------------------------

    def now(self) -> float:
        """The database's clock, in seconds since the epoch: the one clock every node shares."""
        row = self._row(_NOW)
        assert row is not None
        return float(row[0])

    # -- actors ----------------------------------------------------------------------------

    def actor_row(self, actor_id: str) -> ActorRecord | None:
        """The row of actor ``actor_id``, or ``None``."""
        row = self._row(_ACTOR, (actor_id,))
        return actor_from_row(row) if row else None

    def exited_children(
        self, parent: str, child: str, after: int, limit: int = 256
    ) -> dict[str, ActorRecord]:
        """The row of ``parent``'s child ``child``, with those of the children whose exits
        wait right behind the message of seq ``after`` in ``parent``'s mailbox (pending
        ``ChildExit`` messages, up to the first message of another type, at most ``limit``
        looked at), by id, in one query: a supervisor taking a burst of exits reads their
        children once.
        """
        params = {"parent": parent, "child": child, "after": after, "limit": limit}
        return {r.id: r for r in map(actor_from_row, self._rows(_EXITED, params))}

    def children_of(self, actor_id: str) -> list[ActorRecord]:
        """The rows of ``actor_id``'s children, in start order (whatever their status)."""
        return [actor_from_row(r) for r in self._rows(_CHILDREN, (actor_id,))]

    def subtree(self, actor_id: str) -> list[ActorRecord]:
        """The alive actors under ``actor_id``, deepest and newest first (the order to end
        them in).
        """
        return [actor_from_row(r) for r in self._rows(_SUBTREE, {"id": actor_id})]

    def ending_view(self, actor_id: str) -> EndingView:
        """``actor_row``, ``subtree`` and ``cleanup_pending`` of ``actor_id`` in one query:
        ending an actor with no children (an agent's run, say) starts from one read, not
        three.
        """
        record, subtree, pending = None, [], False
        for row in self._rows(_ENDING_VIEW, {"id": actor_id}):
            if row[0] == 0:
                record, pending = actor_from_row(row[3:]), bool(row[2])
            else:
                subtree.append(actor_from_row(row[3:]))
        return EndingView(record, subtree, pending)

    def alive_kind(self, actor_id: str) -> str | None:
        """The kind of ``actor_id`` if it is alive (running or restarting), else ``None``."""
        row = self._row(_ALIVE_KIND, (actor_id,))
        return str(row[0]) if row else None

    def restart_due_in(self, actor_id: str) -> float | None:
        """Seconds until a restarting actor's backoff ends (≤ 0: due), by the database's
        clock; ``None`` if it is not restarting.
        """
        row = self._row(_RESTART_DUE_IN, (actor_id,))
        return float(row[0]) if row and row[0] is not None else None

    def ending_actors(self, node: str) -> list[ActorRecord]:
        """Actors whose end was kept but not carried out, that ``node`` may end."""
        # Upkeep of the node (at start and resync), not a read for work: not in ``reads``.
        return [actor_from_row(r) for r in self._rows(_ENDING, (node,), background=True)]

    def stopping_actors(self, node: str) -> list[tuple[str, str, str | None]]:
        """(id, kind, node) of the actors a handler ended (``ctx.stop``) whose end was not
        handled yet, that ``node`` holds or no node does.
        """
        return [(r[0], r[1], r[2]) for r in self._rows(_STOPPING, (node,))]

    def restarting_actors(self, node: str) -> list[ActorRecord]:
        """Actors waiting out a restart backoff, that ``node`` holds or no node does."""
        return [actor_from_row(r) for r in self._rows(_RESTARTING, (node,))]

    def placement(self, actor_id: str) -> tuple[str, str | None] | None:
        """An alive actor's type and the node holding it (``None``: no node does), or
        ``None`` if it is not alive.
        """
        row = self._row(_PLACEMENT, (actor_id,))
        return (str(row[0]), row[1]) if row else None

    def delete_ended_actor(self, actor_id: str) -> bool:
        """Forget a stopped or failed actor's row (its spec); whether there was one."""
        return bool(self._rows(_DELETE_ENDED, (actor_id,)))

    # -- mailboxes and journals --------------------------------------------------------------

    def mailbox(self, actor_id: str, limit: int = 1000) -> list[MailboxEntry]:
        """An actor's mailbox, oldest first: up to ``limit`` pending messages, and the canceled
        or timed-out ones still marked for a cleanup replay.
        """
        rows = self._rows(_MAILBOX, {"actor": actor_id, "limit": limit})
        return [_mailbox_entry(r) for r in rows]

    def mailbox_and_head(
        self, actor_id: str, limit: int = 1000
    ) -> tuple[list[MailboxEntry], JournalLoad | None]:
        """An actor's mailbox (as ``mailbox``) and, in the same read, the journal of its head
        message (the oldest, the one handled next): an activation that starts with messages
        waiting reads once, not twice. The journal is ``None`` for an empty mailbox.
        """
        return mailbox_and_head_from(
            self._rows(MAILBOX_AND_HEAD, {"actor": actor_id, "limit": limit})
        )

    def cleanup_pending(self, actor_id: str) -> bool:
        """Whether an actor has a canceled or timed-out message still marked for its cleanup
        replay.
        """
        return self._row(_MARKED, {"id": actor_id}) is not None

    def journal(self, message_id: str, recipient: str = "", seq: int = 0) -> JournalLoad:
        """A message and its kept steps; with ``recipient`` and ``seq``, also the pending
        messages to that actor that came before it.
        """
        query, params = journal_query(message_id, recipient, seq)
        rows = self._rows(query, params)
        earlier = [promise_from_row(r) for r in rows if r[_AWAITING + 1]]
        own = [r for r in rows if not r[_AWAITING + 1]]
        marked = any(r[0] == message_id and r[_AWAITING] is not None for r in own)
        return JournalLoad([promise_from_row(r) for r in own], marked, earlier)

    def finished_messages(self) -> list[str]:
        """Every resolved message to an actor, oldest first."""
        return [r[0] for r in self._rows(_FINISHED_MESSAGES)]

    def newest_pending_message(self, prefix: str) -> str | None:
        """The newest pending message whose id is ``prefix`` and one more segment."""
        low, high = prefix_bounds(prefix)
        row = self._row(_NEWEST_UNFINISHED, (low, high, len(prefix) + 1))
        return str(row[0]) if row else None

    # -- recovery ----------------------------------------------------------------------------

    def live_actors(self, node: str) -> list[tuple[str, str, str | None]]:
        """(id, kind, node) of every running actor ``node`` holds or no node does, in start
        order.
        """
        return [(r[0], r[1], r[2]) for r in self._rows(_LIVE, (node,))]

    def mailbox_heads(self, node: str) -> list[MailboxHead]:
        """The head of every live mailbox ``node`` may host: a pending message (with what it
        waits on, if suspended), or a canceled one still marked for its cleanup replay.
        """
        return [
            MailboxHead(r[0], r[1], list(r[2]) if r[2] is not None else None, bool(r[3]))
            for r in self._rows(_HEADS, (node,))
        ]

    # -- for people ----------------------------------------------------------------------------

    def actor_trees(
        self, root: str | None, *, status: str | None = None, limit: int = 1000
    ) -> list[TreeRow]:
        """Actors (all, or ``root`` and those under it by parent links) in start order, with
        the word for where each is; with ``status``, only those so described.
        """
        chosen = _TREE_SUBTREE if root is not None else "SELECT id FROM actors"
        query = _TREE.format(chosen=chosen, described=_DESCRIBED)
        rows = self._rows(query, {"root": root, "status": status, "limit": limit})
        return [TreeRow(*r) for r in rows]

    def actor_detail(self, actor_id: str) -> ActorDetail | None:
        """One actor with its status word, node, mailbox size and state."""
        row = self._row(_DETAIL, {"root": actor_id})
        if row is None:
            return None
        values = list(row)
        values[10] = msgspec.Raw(values[10]) if values[10] is not None else None
        return ActorDetail(*values)

    def timeline(self, promise_id: str) -> list[Promise]:
        """A promise and every promise under it, in creation order."""
        low, high = prefix_bounds(promise_id + "/")
        query = (
            f"SELECT {COLUMNS} FROM promises WHERE id = %s OR (id >= %s AND id < %s) ORDER BY seq"
        )
        return [promise_from_row(r) for r in self._rows(query, (promise_id, low, high))]
