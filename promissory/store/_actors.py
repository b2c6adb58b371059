"""Actor rows and their life: spawn, claim, exit, restart, bounce, end, watch.

An actor row holds its parent, kind (``module:Class``), child spec, state snapshot, status and
activation ``epoch``. Every write made for an activation is fenced by that epoch in the same
statement (``WHERE EXISTS (SELECT 1 FROM actors WHERE id = … AND epoch = …)``), so a stale
activation can write nothing once a newer one has claimed the actor. Stopping or failing an
actor locks its row ``FOR UPDATE`` before rejecting its mailbox, which waits out any sender
holding it ``FOR KEY SHARE`` (see ``_steps``), so no message can slip in behind the end.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ..errors import (
    ActorExistsError,
    FencedError,
)
from ._promises import COLUMNS, promise_from_row
from ._records import Promise, PromiseState
from ._writer import Event, Op, Rows

__all__ = ["ActorRecord", "ActorStatus", "Fence"]


class ActorStatus(enum.StrEnum):
    """Where an actor is in its life."""

    RUNNING = "running"
    """Alive: handling messages, suspended, or passivated until a message arrives."""
    RESTARTING = "restarting"
    """Failed and waiting out a backoff before its supervisor restarts it; messages queue."""
    STOPPED = "stopped"
    """Stopped on purpose; its pending messages were rejected."""
    FAILED = "failed"
    """Given up by its supervisor; its pending messages were rejected with the failure."""

    @property
    def alive(self) -> bool:
        """Whether messages to the actor will be handled."""
        return self in (ActorStatus.RUNNING, ActorStatus.RESTARTING)


class ActorRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the ``actors`` table."""

    id: str
    parent: str | None
    kind: str
    spec: msgspec.Raw
    state: msgspec.Raw | None
    status: ActorStatus
    epoch: int
    node: str | None
    restarts: int
    history: msgspec.Raw
    reason: msgspec.Raw | None
    seq: int
    created_at: datetime
    updated_at: datetime
    restart_at: datetime | None = None
    watchers: list[str] = []
    retry_step: str | None = None


class Fence(msgspec.Struct, frozen=True):
    """The activation a write is made for: the actor id and the epoch it was claimed at."""

    actor: str
    epoch: int


ACTOR_COLUMNS = (
    "id, parent, kind, spec, state, status, epoch, node, restarts, history, reason, seq, "
    "created_at, updated_at, restart_at, watchers, retry_step"
)
_STATUS_OF = {s.value: s for s in ActorStatus}


def actor_from_row(row: Sequence[Any]) -> ActorRecord:
    """Build an ``ActorRecord`` from a row selected with ``ACTOR_COLUMNS``."""
    return ActorRecord(
        id=row[0],
        parent=row[1],
        kind=row[2],
        spec=msgspec.Raw(row[3]),
        state=msgspec.Raw(row[4]) if row[4] is not None else None,
        status=_STATUS_OF[row[5]],
        epoch=row[6],
        node=row[7],
        restarts=row[8],
        history=msgspec.Raw(row[9]),
        reason=msgspec.Raw(row[10]) if row[10] is not None else None,
        seq=row[11],
        created_at=row[12],
        updated_at=row[13],
        restart_at=row[14],
        watchers=list(row[15] or ()),
        retry_step=row[16],
    )


_FENCE = "EXISTS (SELECT 1 FROM actors WHERE id = %(f_actor)s AND epoch = %(f_epoch)s)"


def _fence_params(fence: Fence | None) -> dict[str, Any]:
    return {"f_actor": fence.actor if fence else None, "f_epoch": fence.epoch if fence else None}


def _fence_sql(fence: Fence | None) -> str:
    return _FENCE if fence is not None else "true"


# -- spawn -------------------------------------------------------------------------------------

_SPAWN = f"""
WITH s AS (
    INSERT INTO actors (id, parent, kind, spec, state)
    SELECT %(id)s, %(parent)s, %(kind)s, %(spec)s::jsonb, %(state)s::jsonb
    WHERE {{fence}}
    ON CONFLICT (id) DO UPDATE
        SET status = 'running', state = EXCLUDED.state, spec = EXCLUDED.spec, reason = NULL,
            parent = EXCLUDED.parent, restart_at = NULL, updated_at = clock_timestamp()
        WHERE actors.status IN ('stopped', 'failed') AND actors.kind = EXCLUDED.kind
          AND %(revive)s
    RETURNING {ACTOR_COLUMNS}
), started AS (
    INSERT INTO promises (id, param, tags, kind, recipient)
    SELECT s.id || '/started/' || s.seq || '-' || s.epoch, %(start)s::jsonb,
           %(start_tags)s::jsonb, 'message', s.id
    FROM s WHERE %(start)s::jsonb IS NOT NULL
    ON CONFLICT (id) DO NOTHING
)
SELECT * FROM s
"""
_GET_ACTOR = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE id = %s"


def spawn_op(
    id: str,
    *,
    parent: str | None,
    kind: str,
    spec: str,
    state: str | None,
    fence: Fence | None = None,
    step: Op | None = None,
    start: tuple[str, str] | None = None,
    revive: bool = True,
) -> Op:
    """The op that creates an actor, or finds it.

    A stopped or failed actor of the same kind is brought back with the given state (unless
    ``revive`` is false: then it is found, as it is). With
    ``step``, that step is kept in the same transaction (a spawn made from inside a handler).
    With ``start`` (an encoded message and its tags), a created or revived actor is sent that
    message in the same transaction (a supervisor's order to start its children).
    """
    params = {
        "id": id,
        "parent": parent,
        "kind": kind,
        "spec": spec,
        "state": state,
        "start": start[0] if start else None,
        "start_tags": start[1] if start else "{}",
        "revive": revive,
        **_fence_params(fence),
    }
    statements: list[Any] = [
        (_SPAWN.replace("{fence}", _fence_sql(fence)), params),
        (_GET_ACTOR, (id,)),
    ]
    if step is not None:
        # A spawn is rare: run the step's read-back statement always, inside the batch.
        statements.extend(step.statements)
        if step.reread is not None:
            statements.append(step.reread)

    def finish(rows: list[Rows], xid: int | None) -> tuple[ActorRecord, bool, Any]:
        written, existing = rows[0], rows[1]
        step_result = step.finish(rows[2:], xid) if step is not None else None
        if written:
            return actor_from_row(written[0]), True, step_result
        if not existing:
            raise FencedError(
                f"spawning {id!r}: the activation of {fence.actor if fence else '?'} is stale"
            )
        record = actor_from_row(existing[0])
        if record.kind != kind:
            raise ActorExistsError(
                f"an actor with the id {id!r} exists already, of kind {record.kind}, not {kind}"
            )
        return record, False, step_result

    return Op(statements, finish)


# -- claiming -----------------------------------------------------------------------------------

_CLAIM = f"""
UPDATE actors SET epoch = epoch + 1, node = %(node)s, updated_at = clock_timestamp()
WHERE id = %(id)s AND status = 'running'
  AND (node IS NULL OR node = %(node)s OR %(force)s)
RETURNING {ACTOR_COLUMNS}
"""


def claim_op(actor_id: str, node: str, *, force: bool = False) -> Op:
    """The op that makes a new activation of an actor on ``node``.

    Its result is the row with the new epoch, or ``None`` when the actor is not alive or
    another node holds it.
    """
    params = {"id": actor_id, "node": node, "force": force}

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    return Op([(_CLAIM, params)], finish)


def decode_spec(record: ActorRecord) -> dict[str, Any]:
    """The child spec of an actor as plain JSON values."""
    spec: dict[str, Any] = msgspec.json.decode(record.spec)
    return spec


# -- failure: restart or give up ---------------------------------------------------------------

_LOCK_ACTOR = "SELECT id FROM actors WHERE id = %(id)s FOR UPDATE"
_END_ACTOR = f"""
UPDATE actors SET status = %(status)s, reason = %(reason)s::jsonb, epoch = epoch + 1,
                  history = coalesce(%(history)s::jsonb, history), node = NULL,
                  restart_at = NULL, updated_at = clock_timestamp()
WHERE id = %(id)s AND status IN ('running', 'restarting')
RETURNING {ACTOR_COLUMNS}
"""
_REJECT_MAILBOX = """
UPDATE promises SET state = %(state)s, value = %(value)s::jsonb, settled_at = clock_timestamp(),
                    awaiting = NULL
WHERE recipient = %(id)s AND state = 'pending'
RETURNING id
"""
_NOTIFY_WATCHERS = """
INSERT INTO promises (id, param, tags, kind, recipient)
SELECT w.id || '/down/' || %(id)s || '/' || e.seq || '-' || e.epoch, %(down)s::jsonb,
       %(down_tags)s::jsonb, 'message', w.id
FROM (SELECT watchers, epoch, seq FROM actors WHERE id = %(id)s) e,
     LATERAL unnest(e.watchers) AS u(watcher)
     JOIN actors w ON w.id = u.watcher AND w.status IN ('running', 'restarting')
WHERE %(down)s::jsonb IS NOT NULL
ON CONFLICT (id) DO NOTHING
RETURNING recipient
"""
_DELETE_ACTOR = "DELETE FROM actors WHERE id = %(id)s AND %(delete)s AND status <> 'running'"


def end_actor_op(
    actor_id: str,
    *,
    status: ActorStatus,
    reason: str | None,
    reject_state: PromiseState,
    reject_value: str,
    history: str | None = None,
    down: str | None = None,
    down_tags: str = "{}",
    delete: bool = False,
) -> Op:
    """The op that stops or fails an actor and rejects every message still in its mailbox.

    The actor's row is locked first (``FOR UPDATE``), which waits out any sender that has
    locked it to insert a message, so no message is left behind the end (invariant 6). With
    ``down`` (an encoded message) each alive watcher is sent it; with ``delete`` the row goes
    too (a temporary child's spec is not kept). The result is the ended row (``None`` if it
    had ended already), the rejected message ids, and the watchers told.
    """
    params = {
        "id": actor_id,
        "status": status.value,
        "reason": reason,
        "history": history,
        "state": reject_state.value,
        "value": reject_value,
        "down": down,
        "down_tags": down_tags,
        "delete": delete,
    }

    def finish(
        rows: list[Rows], xid: int | None
    ) -> tuple[ActorRecord | None, list[str], list[str]]:
        ended = actor_from_row(rows[1][0]) if rows[1] else None
        return ended, [r[0] for r in rows[2]], [r[0] for r in rows[3]]

    def events(result: tuple[ActorRecord | None, list[str], list[str]]) -> list[Event]:
        return [("settled", id) for id in result[1]]

    return Op(
        [
            (_LOCK_ACTOR, params),
            (_END_ACTOR, params),
            (_REJECT_MAILBOX, params),
            (_NOTIFY_WATCHERS, params),
            (_DELETE_ACTOR, params),
        ],
        finish,
        events,
    )


# -- ending a tree durably: stop and cancel ----------------------------------------------------

_MARK_ENDING = """
UPDATE actors SET reason = coalesce(reason, '{}'::jsonb)
                           || jsonb_build_object('ending', %(exit)s::text),
                  updated_at = clock_timestamp()
WHERE id = %(id)s AND status IN ('running', 'restarting')
RETURNING id
"""
# Other writes keep the mark (a handler's stop merges its key in beside it, an exit keeps it)
# and no restart takes a marked actor back, so the end, once kept, is not lost.
_CANCEL_MAILBOX = """
WITH RECURSIVE tree AS (
    SELECT id FROM actors
    WHERE id = %(id)s AND status IN ('running', 'restarting') AND reason ? 'ending'
    UNION ALL
    SELECT a.id FROM actors a JOIN tree t ON a.parent = t.id
    WHERE a.status IN ('running', 'restarting')
), n AS (SELECT clock_timestamp() AS now)
UPDATE promises p SET
    state = CASE WHEN p.timeout_at <= n.now THEN 'rejected_timedout' ELSE 'rejected_canceled' END,
    value = CASE WHEN p.timeout_at <= n.now THEN NULL ELSE %(value)s::jsonb END,
    settled_at = CASE WHEN p.timeout_at <= n.now THEN p.timeout_at ELSE n.now END,
    awaiting = NULL
FROM n
WHERE p.recipient IN (SELECT id FROM tree) AND p.state = 'pending'
  AND %(value)s::jsonb IS NOT NULL
RETURNING p.id
"""
_ANNOUNCE_ENDING = """
SELECT pg_notify(%(channel)s, 'e' || id) FROM actors
WHERE id = %(id)s AND status IN ('running', 'restarting') AND reason ? 'ending'
"""
ENDING = f"""
SELECT {ACTOR_COLUMNS} FROM actors
WHERE status IN ('running', 'restarting') AND reason ? 'ending' AND (node IS NULL OR node = %s)
ORDER BY seq
"""
"""The actors whose end was kept but not finished (recovery finishes it), for a node."""


def mark_ending_op(actor_id: str, channel: str, cancel_value: str | None = None) -> Op:
    """The op that decides, durably, that ``actor_id`` and its whole subtree end.

    In one transaction: the actor is marked ``{"ending": "shutdown"}``; with ``cancel_value``
    (an encoded cancel reason) every pending message of its mailbox and of the mailboxes of
    every actor under it is canceled, and by the cascade every pending promise under them;
    and every runtime listening on ``channel`` is told (``ending``), so the node hosting the
    actor ends the tree, children first. Whatever
    is left of it when a process dies half-way is ended by the next recovery pass (``ENDING``).
    The result is whether the actor exists, whether it was marked, and the canceled messages.
    """
    params = {
        "id": actor_id,
        "exit": "shutdown",
        "value": cancel_value,
        "channel": channel,
    }

    def finish(rows: list[Rows], xid: int | None) -> tuple[bool, bool, list[str]]:
        return bool(rows[0]), bool(rows[1]), [r[0] for r in rows[2]]

    def events(result: tuple[bool, bool, list[str]]) -> list[Event]:
        return [("settled", id) for id in result[2]]

    return Op(
        [
            (_LOCK_ACTOR, params),
            (_MARK_ENDING, params),
            (_CANCEL_MAILBOX, params),
            (_ANNOUNCE_ENDING, params),
        ],
        finish,
        events,
        keys=(actor_id,),
    )


# -- supervision: exits, restarts, bounces ------------------------------------------------------

_EXIT = f"""
WITH child AS (
    UPDATE actors SET status = 'restarting', epoch = epoch + 1,
                      reason = %(reason)s::jsonb || CASE WHEN reason ? 'ending'
                          THEN jsonb_build_object('ending', reason->'ending') ELSE '{{}}' END,
                      restart_at = NULL, updated_at = clock_timestamp(),
                      retry_step = coalesce(%(retry_step)s, retry_step)
    WHERE id = %(id)s AND epoch = %(epoch)s AND status = 'running'
    RETURNING epoch, seq
), parent AS (
    SELECT status FROM actors WHERE id = %(parent)s FOR KEY SHARE
)
INSERT INTO promises (id, param, tags, kind, recipient)
SELECT %(message_id)s || '/' || child.seq || '-' || child.epoch,
       jsonb_set(%(param)s::jsonb, '{{epoch}}', to_jsonb(child.epoch)), %(tags)s::jsonb, 'message',
       %(parent)s
FROM child, parent WHERE parent.status IN ('running', 'restarting')
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""


def exit_op(
    actor_id: str,
    epoch: int,
    *,
    parent: str,
    message_id: str,
    param: str,
    tags: str,
    reason: str,
    retry_step: str | None = None,
) -> Op:
    """The op that records a supervised child's failure and tells its supervisor.

    The child goes to ``restarting`` (no activation starts until the supervisor decides) with
    a new epoch that fences off the failed activation, and the supervisor is sent ``param``
    as message ``{message_id}/{new epoch}``. Its result is that message, or ``None`` when the
    child was not the running incarnation ``epoch`` any more or the supervisor is not alive.
    ``retry_step`` names the step whose failure crashed the child: its next incarnation tries
    that step again rather than replaying the failure.
    """
    params = {
        "retry_step": retry_step,
        "id": actor_id,
        "epoch": epoch,
        "parent": parent,
        "message_id": message_id,
        "param": param,
        "tags": tags,
        "reason": reason,
    }

    def finish(rows: list[Rows], xid: int | None) -> Promise | None:
        return promise_from_row(rows[0][0]) if rows[0] else None

    return Op([(_EXIT, params)], finish)


_REVIVE = f"""
WITH r AS (
    UPDATE actors SET
        status = CASE WHEN %(delay)s::float8 IS NULL THEN 'running' ELSE 'restarting' END,
        restart_at = CASE WHEN %(delay)s::float8 IS NULL THEN NULL
                          ELSE clock_timestamp() + %(delay)s::float8 * interval '1 second' END,
        epoch = epoch + 1, restarts = restarts + 1, node = NULL, reason = NULL,
        updated_at = clock_timestamp(), retry_step = coalesce(%(retry_step)s, retry_step),
        state = CASE WHEN %(state)s::jsonb IS NULL THEN state ELSE %(state)s::jsonb END,
        history = coalesce(
            %(history)s::jsonb,
            (SELECT coalesce(jsonb_agg(h ORDER BY n), '[]'::jsonb) FROM (
                SELECT h, n FROM jsonb_array_elements(
                    history || to_jsonb(extract(epoch FROM clock_timestamp())::float8)
                ) WITH ORDINALITY AS e(h, n) ORDER BY n DESC LIMIT 20) last))
    WHERE id = %(id)s AND (%(from_stopped)s OR status IN ('running', 'restarting'))
      AND NOT coalesce(reason ? 'ending', false)  -- its tree is ending: never restarted
    RETURNING {ACTOR_COLUMNS}
), started AS (
    INSERT INTO promises (id, param, tags, kind, recipient)
    SELECT r.id || '/started/' || r.seq || '-' || r.epoch, %(start)s::jsonb,
           %(start_tags)s::jsonb, 'message', r.id
    FROM r WHERE %(start)s::jsonb IS NOT NULL
    ON CONFLICT (id) DO NOTHING
)
SELECT * FROM r
"""


def revive_op(
    actor_id: str,
    *,
    delay: float | None = None,
    from_stopped: bool = False,
    state: str | None = None,
    history: str | None = None,
    start: tuple[str, str] | None = None,
    retry_step: str | None = None,
) -> Op:
    """The op that starts an actor's next incarnation (now, or after ``delay`` seconds).

    A new epoch fences off any activation left from before; the mailbox and the state
    snapshot carry over (``state`` replaces the snapshot when given). ``from_stopped`` also
    brings back a stopped or failed actor (``restart_child``). The restart's time is added to
    the actor's ``history`` (the last 20 are kept), unless ``history`` replaces it. ``start``
    is sent to the new incarnation, as with ``spawn_op``. Its result is the row, or ``None``
    when there is no such actor.
    """
    params = {
        "retry_step": retry_step,
        "id": actor_id,
        "delay": delay,
        "from_stopped": from_stopped,
        "state": state,
        "history": history,
        "start": start[0] if start else None,
        "start_tags": start[1] if start else "{}",
    }

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    return Op([(_REVIVE, params)], finish)


_BOUNCE = f"""
UPDATE actors SET epoch = epoch + 1, node = NULL, updated_at = clock_timestamp()
WHERE id = %(id)s
RETURNING {ACTOR_COLUMNS}
"""


def bounce_op(actor_id: str) -> Op:
    """The op that fences off an actor's activation (a new epoch) without ending the actor."""

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    return Op([(_BOUNCE, {"id": actor_id})], finish)


_DUE_RESTART = f"""
UPDATE actors SET status = 'running', restart_at = NULL, updated_at = clock_timestamp()
WHERE id = %(id)s AND status = 'restarting' AND restart_at <= clock_timestamp()
  AND NOT coalesce(reason ? 'ending', false)
RETURNING {ACTOR_COLUMNS}
"""


def due_restart_op(actor_id: str) -> Op:
    """The op that ends an actor's backoff once its restart time has come."""

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    return Op([(_DUE_RESTART, {"id": actor_id})], finish)


_WATCH = """
UPDATE actors SET watchers = array_append(watchers, %(watcher)s::text)
WHERE id = %(id)s AND NOT (%(watcher)s::text = ANY(watchers))
"""
_WATCHED = "SELECT status, epoch FROM actors WHERE id = %(id)s"


def watch_op(actor_id: str, watcher: str) -> Op:
    """The op that adds ``watcher`` to the actors told when ``actor_id`` ends.

    Its result is the watched actor's status and epoch (``None`` if there is no such actor),
    so a watcher of an actor that has ended already can be told at once.
    """
    params = {"id": actor_id, "watcher": watcher}

    def finish(rows: list[Rows], xid: int | None) -> tuple[str, int] | None:
        return (rows[1][0][0], rows[1][0][1]) if rows[1] else None

    return Op([(_WATCH, params), (_WATCHED, params)], finish)
