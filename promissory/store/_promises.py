"""The promise operations as SQL: create, settle, read, search, and the timeout sweep.

Every read projects timeouts: a pending promise whose ``timeout_at`` has passed reads as
``rejected_timedout`` (``resolved`` for a timer) with ``settled_at = timeout_at``, before any
sweep has written it. Every write is one ``Op`` for the group-commit writer and is safe to run
again after it committed, as the writer requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg import sql

from ..errors import PromiseNotFoundError
from ._ops import Event, EventKind, Group, Op, Rows
from ._records import Outcome, Page, Promise, PromiseKind, PromiseState

_EXPIRED = "(state = 'pending' AND timeout_at <= clock_timestamp())"
_TIMEOUT_STATE = "CASE WHEN kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END"

COLUMNS = (
    "id, "
    f"CASE WHEN {_EXPIRED} THEN {_TIMEOUT_STATE} ELSE state END AS state, "
    "param, value, tags, timeout_at, created_at, "
    f"CASE WHEN {_EXPIRED} THEN timeout_at ELSE settled_at END AS settled_at, "
    "kind, recipient, attempt, next_attempt_at, fingerprint, xmin::text, seq"
)
"""The columns every read returns, in the order ``promise_from_row`` expects."""

_STATE_OF = {s.value: s for s in PromiseState}
_KIND_OF = {k.value: k for k in PromiseKind}
_tags_decoder = msgspec.json.Decoder(dict[str, str])


def promise_from_row(row: Sequence[Any]) -> Promise:
    """Build a ``Promise`` from a row selected with ``COLUMNS``."""
    return Promise(
        id=row[0],
        state=_STATE_OF[row[1]],
        param=msgspec.Raw(row[2]) if row[2] is not None else None,
        value=msgspec.Raw(row[3]) if row[3] is not None else None,
        tags=_tags_decoder.decode(row[4]) if row[4] not in (None, b"{}") else {},
        timeout_at=row[5],
        created_at=row[6],
        settled_at=row[7],
        kind=_KIND_OF[row[8]],
        recipient=row[9],
        attempt=row[10],
        next_attempt_at=row[11],
        fingerprint=row[12],
        seq=row[14],
    )


def written_by(row: Sequence[Any], xid: int) -> bool:
    """Whether the row version was written by transaction ``xid`` (``xmin`` is its low 32 bits)."""
    return int(row[13]) == xid & 0xFFFFFFFF


# -- create ------------------------------------------------------------------------------------

_CREATE = f"""
INSERT INTO promises (id, state, param, tags, timeout_at, created_at, settled_at, kind, recipient)
SELECT %(id)s,
       CASE WHEN t.expired THEN
            CASE WHEN %(kind)s = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
            ELSE 'pending' END,
       %(param)s::jsonb, %(tags)s::jsonb, t.at,
       CASE WHEN t.expired THEN t.at ELSE clock_timestamp() END,
       CASE WHEN t.expired THEN t.at END,
       %(kind)s, %(recipient)s
FROM (SELECT a.at, a.at <= clock_timestamp() AS expired
      FROM (SELECT coalesce(%(at)s::timestamptz,
                            clock_timestamp() + %(secs)s::float8 * interval '1 second') AS at) a) t
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""

_CREATE_MANY = f"""
INSERT INTO promises (id, state, param, tags, timeout_at, created_at, settled_at, kind, recipient)
SELECT v.vid,
       CASE WHEN t.expired THEN
            CASE WHEN v.vkind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
            ELSE 'pending' END,
       v.vparam::jsonb, v.vtags::jsonb, t.at,
       CASE WHEN t.expired THEN t.at ELSE clock_timestamp() END,
       CASE WHEN t.expired THEN t.at END,
       v.vkind, v.vrecipient
FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::timestamptz[], %s::text[],
            %s::text[]) WITH ORDINALITY AS v(vid, vparam, vtags, vsecs, vat, vkind, vrecipient, n)
CROSS JOIN LATERAL (
    SELECT a.at, a.at <= clock_timestamp() AS expired
    FROM (SELECT coalesce(v.vat, clock_timestamp() + v.vsecs * interval '1 second') AS at) a
) t
ORDER BY v.n
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""
"""``_CREATE`` for many promises at once (group commit's multi-row form)."""

_GET = f"SELECT {COLUMNS} FROM promises WHERE id = %s"


_OWN = """
UPDATE promises SET owner = %(owner)s
WHERE id = %(id)s AND owner IS NULL AND state = 'pending' AND %(owner)s::text IS NOT NULL
"""


def create_op(
    id: str,
    *,
    param: str | None,
    tags: str,
    secs: float | None,
    at: datetime | None,
    kind: PromiseKind,
    recipient: str | None = None,
    owner: str | None = None,
) -> Op:
    """The op that creates a promise, or finds the one that has that id already.

    With ``owner`` (a message id), the promise, created or found pending with no owner yet,
    belongs to that message: canceling or timing out the message cancels it too.
    """
    params = {
        "id": id,
        "param": param,
        "tags": tags,
        "secs": secs,
        "at": at,
        "kind": kind.value,
        "recipient": recipient,
        "owner": owner,
    }
    if owner is not None:
        return Op(
            [(_CREATE, params), (_OWN, params)],
            _finish_owned,
            keys=(id,),
            reread=(_GET, (id,)),
        )
    group = Group(_CREATE_MANY, id, (id, param, tags, secs, at, kind.value, recipient))
    return Op([(_CREATE, params)], _finish_create, keys=(id,), reread=(_GET, (id,)), group=group)


def _finish_owned(rows: list[Rows], xid: int | None) -> Outcome:
    return _finish_create([rows[0], rows[-1]], xid)


def _finish_create(rows: list[Rows], xid: int | None) -> Outcome:
    inserted, selected = rows
    if inserted:
        return Outcome(promise_from_row(inserted[0]), True)
    row = selected[0]
    return Outcome(promise_from_row(row), xid is not None and written_by(row, xid))


# -- settle ------------------------------------------------------------------------------------

_SETTLE = f"""
UPDATE promises AS p SET
    state = CASE WHEN c.expired THEN
                 CASE WHEN p.kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
                 ELSE %(state)s END,
    value = CASE WHEN c.expired THEN NULL ELSE %(value)s::jsonb END,
    settled_at = CASE WHEN c.expired THEN p.timeout_at ELSE c.now END,
    awaiting = NULL
FROM (SELECT q.id AS cid, q.timeout_at <= n.now AS expired, n.now
      FROM promises q, (SELECT clock_timestamp() AS now) n WHERE q.id = %(id)s) c
WHERE p.id = c.cid AND p.state = 'pending'
RETURNING {COLUMNS.replace("clock_timestamp()", "c.now")}, c.expired
"""

_SETTLE_MANY = f"""
UPDATE promises AS p SET
    state = CASE WHEN c.expired THEN
                 CASE WHEN p.kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
                 ELSE c.vstate END,
    value = CASE WHEN c.expired THEN NULL ELSE c.vvalue::jsonb END,
    settled_at = CASE WHEN c.expired THEN p.timeout_at ELSE c.now END,
    awaiting = NULL
FROM (SELECT q.id AS cid, q.timeout_at <= n.now AS expired, n.now, v.vstate, v.vvalue
      FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(vid, vstate, vvalue)
      JOIN promises q ON q.id = v.vid COLLATE "C",
      (SELECT clock_timestamp() AS now) n) c
WHERE p.id = c.cid AND p.state = 'pending'
RETURNING {COLUMNS.replace("clock_timestamp()", "c.now")}, c.expired
"""
"""``_SETTLE`` for many promises at once."""


def settle_op(id: str, state: PromiseState, value: str | None) -> Op:
    """The op that settles a pending promise; a settled one is returned as it is."""
    params = {"id": id, "state": state.value, "value": value}

    def finish(rows: list[Rows], xid: int | None) -> Outcome:
        updated, selected = rows
        if updated:
            row = updated[0]
            return Outcome(promise_from_row(row), not row[15])
        if not selected:
            raise PromiseNotFoundError(f"no promise has the id {id!r}", id)
        row = selected[0]
        applied = xid is not None and written_by(row, xid) and row[1] == state.value
        return Outcome(promise_from_row(row), applied)

    return Op(
        [(_SETTLE, params)],
        finish,
        _settled_events,
        keys=(id,),
        reread=(_GET, (id,)),
        group=Group(_SETTLE_MANY, id, (id, state.value, value)),
    )


def _settled_events(outcome: Outcome) -> list[Event]:
    return [(EventKind.SETTLED, outcome.promise.id)] if outcome.promise.state.settled else []


# -- the timeout sweep -------------------------------------------------------------------------

# ``(SELECT clock_timestamp())`` is read once, so the pending-by-timeout index is scanned only up
# to now; ``timeout_at <= clock_timestamp()`` (volatile) would filter every pending timer of the
# table (and, until a vacuum, every row that ever was one) on each sweep, and a sweep follows
# every new timer: quadratic in the timers waiting.

_SWEEP = f"""
UPDATE promises AS p SET
    state = CASE WHEN p.kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END,
    settled_at = p.timeout_at,
    awaiting = NULL
FROM (SELECT id AS due_id FROM promises
      WHERE state = 'pending' AND timeout_at <= (SELECT clock_timestamp())
      ORDER BY timeout_at LIMIT %s FOR UPDATE SKIP LOCKED) due
WHERE p.id = due.due_id AND p.state = 'pending'
RETURNING {COLUMNS}
"""


def sweep_op(limit: int) -> Op:
    """The op that settles up to ``limit`` overdue pending promises, oldest first."""

    def finish(rows: list[Rows], xid: int | None) -> list[Promise]:
        # RETURNING follows the join's order, not the subquery's ORDER BY: sort by due time.
        swept = [promise_from_row(r) for r in rows[0]]
        return sorted(swept, key=lambda p: (p.timeout_at, p.id))

    def events(promises: list[Promise]) -> list[Event]:
        return [(EventKind.SETTLED, p.id) for p in promises]

    return Op([(_SWEEP, (limit,))], finish, events)


NEXT_TIMEOUT = (
    "SELECT extract(epoch FROM min(timeout_at) - clock_timestamp()) "
    "FROM promises WHERE state = 'pending' AND timeout_at IS NOT NULL"
)
"""Seconds from the database's now until the earliest pending timeout (negative if overdue)."""


# -- search ------------------------------------------------------------------------------------


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """The id range ``[low, high)`` holding exactly the ids that start with ``prefix``.

    Ids are compared bytewise (``COLLATE "C"``), and UTF-8 byte order is code-point order, so
    incrementing the last code point gives the upper bound; the primary key serves the range.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return prefix, "".join(chars)
        chars.pop()
    return prefix, None


def search_query(
    *,
    prefix: str | None,
    states: Sequence[PromiseState] | None,
    tags: str | None,
    kind: PromiseKind | None,
    created_after: datetime | None,
    created_before: datetime | None,
    after_seq: int | None,
    limit: int,
) -> tuple[sql.Composed, list[Any]]:
    """The SELECT for a search, built only from the filters given; values stay parameters."""
    where: list[sql.Composable] = []
    params: list[Any] = []
    if prefix:
        low, high = prefix_bounds(prefix)
        where.append(sql.SQL("id >= %s"))
        params.append(low)
        if high is not None:
            where.append(sql.SQL("id < %s"))
            params.append(high)
    if states:
        where.append(
            sql.SQL(f"(CASE WHEN {_EXPIRED} THEN {_TIMEOUT_STATE} ELSE state END) = ANY(%s)")
        )
        params.append([s.value for s in states])
    if tags is not None:
        where.append(sql.SQL("tags @> %s::jsonb"))
        params.append(tags)
    if kind is not None:
        where.append(sql.SQL("kind = %s"))
        params.append(kind.value)
    if created_after is not None:
        where.append(sql.SQL("created_at >= %s"))
        params.append(created_after)
    if created_before is not None:
        where.append(sql.SQL("created_at < %s"))
        params.append(created_before)
    if after_seq is not None:
        where.append(sql.SQL("seq > %s"))
        params.append(after_seq)
    query = sql.SQL("SELECT {cols} FROM promises {where} ORDER BY seq LIMIT %s").format(
        cols=sql.SQL(COLUMNS),
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
    )
    params.append(limit + 1)
    return query, params


def page_from_rows(rows: Sequence[Sequence[Any]], limit: int) -> Page:
    """A page of at most ``limit`` promises, with a cursor when there are more."""
    items = [promise_from_row(r) for r in rows[:limit]]
    cursor = str(rows[limit - 1][14]) if len(rows) > limit else None
    return Page(items, cursor)
