"""Schedule rows: what a schedule runs and when it fires next, and the firing's claim.

A schedule is one row of ``schedules``. This module only keeps rows; when a cron expression
fires is the runtime's to compute (``promissory.runtime``). A firing is made exactly once by
its order: a node *claims* the row at its ``next_at`` (compare-and-set, refused while another
live node holds the claim), starts the run (whose id is the idempotency key), then *advances*
``next_at``, dropping the claim. A node that dies in between leaves the claim to a live node,
which starts the same run id (a no-op if it exists) and advances.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg

from ..errors import ScheduleNotFoundError

if TYPE_CHECKING:
    from ._store import Store

__all__ = [
    "Schedule",
    "advance_schedule",
    "claim_firing",
    "delete_schedule",
    "due_schedules",
    "find_schedule",
    "list_schedules",
    "put_schedule",
    "seconds_to_next_firing",
    "set_schedule_paused",
]


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule, as kept in its row.

    Attributes:
        id: the schedule's id; each firing's run id is ``{id}/{firing time, UTC}``.
        cron: the cron expression (five fields, or six with seconds last).
        timezone: the IANA time zone the expression is read in.
        kind: the actor type its runs are (``agent:<name>`` for an agent).
        task: the input each run is given (JSON).
        missed: what happens to firings missed by more than ``grace`` seconds while no node
            ran it: ``skip`` them, or run ``once`` (at the latest of them).
        grace: seconds late a firing may still be made as usual.
        paused: no firing is made while paused; resuming fires from then on.
        next_at: the next firing time.
        claimed_by: the node making the firing at ``next_at`` now, if any.
        last_at: the last firing made (its time).
        last_run: the run it started.

    """

    id: str
    cron: str
    timezone: str
    kind: str
    task: Any
    missed: str
    grace: float
    paused: bool
    next_at: datetime
    claimed_by: str | None
    last_at: datetime | None
    last_run: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "id, cron, timezone, kind, task, missed, grace, paused, next_at, claimed_by, last_at, "
    "last_run, created_at, updated_at"
)


def _schedule(row: Sequence[Any]) -> Schedule:
    fields = dict(zip(_COLUMNS.split(", "), row, strict=True))
    task = fields["task"]
    fields["task"] = msgspec.json.decode(task) if task is not None else None
    return Schedule(**fields)


_PUT = f"""
INSERT INTO schedules AS s (id, cron, timezone, kind, task, missed, grace, next_at)
VALUES (%(id)s, %(cron)s, %(timezone)s, %(kind)s, %(task)s::jsonb, %(missed)s, %(grace)s,
        %(next_at)s)
ON CONFLICT (id) DO UPDATE SET
    cron = excluded.cron, timezone = excluded.timezone, kind = excluded.kind,
    task = excluded.task, missed = excluded.missed, grace = excluded.grace,
    next_at = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone)
                   THEN s.next_at ELSE excluded.next_at END,
    claimed_by = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone)
                   THEN s.claimed_by END,
    updated_at = clock_timestamp()
RETURNING {_COLUMNS}
"""

_LIVE_NODES = """
SELECT n.id FROM nodes n JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 AND ((l.classid::bigint << 32) | l.objid::bigint) = n.lock_key
WHERE n.ended_at IS NULL
"""

_DUE = f"""
SELECT {_COLUMNS}, clock_timestamp() FROM schedules
WHERE NOT paused AND next_at <= clock_timestamp() AND kind = ANY(%(kinds)s)
  AND (claimed_by IS NULL OR claimed_by = %(node)s OR claimed_by NOT IN ({_LIVE_NODES}))
ORDER BY next_at
LIMIT %(limit)s
"""

_CLAIM = f"""
UPDATE schedules SET claimed_by = %(node)s
WHERE id = %(id)s AND next_at = %(at)s AND NOT paused
  AND (claimed_by IS NULL OR claimed_by = %(node)s OR claimed_by NOT IN ({_LIVE_NODES}))
RETURNING id
"""

_ADVANCE = """
UPDATE schedules SET next_at = %(next_at)s, claimed_by = NULL,
    last_at = coalesce(%(fired_at)s, last_at), last_run = coalesce(%(run)s, last_run),
    updated_at = clock_timestamp()
WHERE id = %(id)s AND next_at = %(at)s AND claimed_by = %(node)s
RETURNING id
"""

_NEXT_DUE = """
SELECT extract(epoch FROM min(next_at) - clock_timestamp()) FROM schedules
WHERE NOT paused AND kind = ANY(%s)
"""


def put_schedule(
    store: Store,
    *,
    id: str,
    cron: str,
    timezone: str,
    kind: str,
    task_json: str,
    missed: str,
    grace: float,
    next_at: datetime,
) -> Schedule:
    """Create the schedule ``id``, or change it to this definition (its pause is kept; its
    next firing is kept too unless the expression or the zone changed).
    """
    params = {
        "id": id,
        "cron": cron,
        "timezone": timezone,
        "kind": kind,
        "task": task_json,
        "missed": missed,
        "grace": grace,
        "next_at": next_at,
    }
    row = store.read(lambda conn: conn.execute(_PUT, params).fetchone())
    assert row is not None
    return _schedule(row)


def find_schedule(store: Store, id: str) -> Schedule | None:
    """The schedule ``id``, or ``None``."""
    row = store.read(
        lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE id = %s", (id,)
        ).fetchone()
    )
    return _schedule(row) if row else None


def list_schedules(store: Store, prefix: str = "") -> list[Schedule]:
    """Every schedule whose id starts with ``prefix``, by id."""
    rows = store.read(
        lambda conn: conn.execute(
            f"SELECT {_COLUMNS} FROM schedules WHERE starts_with(id, %s) ORDER BY id", (prefix,)
        ).fetchall()
    )
    return [_schedule(r) for r in rows]


def set_schedule_paused(
    store: Store, id: str, paused: bool, next_at: datetime | None = None
) -> Schedule:
    """Pause or resume the schedule ``id`` (resuming sets its next firing to ``next_at``).

    Raises:
        ScheduleNotFoundError: no schedule has this id.

    """
    query = (
        f"UPDATE schedules SET paused = %(paused)s, next_at = coalesce(%(next_at)s, next_at), "
        # A pause keeps the claim of a firing under way, so the node making its run can still
        # record it (``_ADVANCE`` matches on the claim); a resume starts from a fresh one.
        f"claimed_by = CASE WHEN %(paused)s THEN claimed_by END, "
        f"updated_at = clock_timestamp() WHERE id = %(id)s "
        f"RETURNING {_COLUMNS}"
    )
    params = {"id": id, "paused": paused, "next_at": next_at}
    row = store.read(lambda conn: conn.execute(query, params).fetchone())
    if row is None:
        raise ScheduleNotFoundError(f"no schedule has the id {id!r}")
    return _schedule(row)


def delete_schedule(store: Store, id: str) -> bool:
    """Delete the schedule ``id`` (its runs stay); whether there was one."""
    rows = store.read(
        lambda conn: conn.execute(
            "DELETE FROM schedules WHERE id = %s RETURNING id", (id,)
        ).fetchall()
    )
    return bool(rows)


def due_schedules(
    store: Store, kinds: Sequence[str], node: str, limit: int = 100
) -> tuple[list[Schedule], datetime | None]:
    """Schedules of ``kinds`` whose next firing has come and that ``node`` may claim (no
    claim, its own, or a claim of a node whose lease is gone), earliest first; and the
    database's clock as it read them.
    """
    params = {"kinds": list(kinds), "node": node, "limit": limit}

    def read(conn: psycopg.Connection[Any]) -> tuple[list[Schedule], datetime | None]:
        rows = conn.execute(_DUE, params).fetchall()
        if not rows:
            return [], None
        return [_schedule(r[:-1]) for r in rows], rows[0][-1]

    return store.read(read, background=True)  # the scheduler's look, not a read for work


def claim_firing(store: Store, id: str, at: datetime, node: str) -> bool:
    """Claim the firing of schedule ``id`` at ``at`` for ``node``; whether it was claimed
    (not: the row moved on, was paused or deleted, or a live node holds the claim).
    """
    params = {"id": id, "at": at, "node": node}
    return bool(store.read(lambda conn: conn.execute(_CLAIM, params).fetchall()))


def advance_schedule(
    store: Store,
    id: str,
    at: datetime,
    node: str,
    next_at: datetime,
    fired_at: datetime | None,
    run: str | None,
) -> bool:
    """Move schedule ``id`` on from the firing at ``at`` (claimed by ``node``) to ``next_at``,
    recording the firing made (``fired_at``, ``run``; ``None`` for a skip); whether it moved.
    """
    params = {
        "id": id,
        "at": at,
        "node": node,
        "next_at": next_at,
        "fired_at": fired_at,
        "run": run,
    }
    return bool(store.read(lambda conn: conn.execute(_ADVANCE, params).fetchall()))


def seconds_to_next_firing(store: Store, kinds: Sequence[str]) -> float | None:
    """Seconds until the earliest unpaused schedule of ``kinds`` fires (≤ 0: due), by the
    database's clock; ``None`` if there is none.
    """
    row = store.read(
        lambda conn: conn.execute(_NEXT_DUE, (list(kinds),)).fetchone(), background=True
    )
    return float(row[0]) if row and row[0] is not None else None
