"""Actor rows: what they hold, and spawning, claiming and watching an actor.

An actor row holds its parent, kind (its type name), child spec, state snapshot, status and
activation ``epoch``. Every write made for an activation is fenced by that epoch in the same
statement (``WHERE EXISTS (SELECT 1 FROM actors WHERE id = … AND epoch = …)``), so a stale
activation can write nothing once a newer one has claimed the actor. Supervision's writes
(exits, restarts, bounces, ends) are in ``_supervision``.
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
from ._ops import Op, Rows

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
    supervisor: bool | None = None
    """Whether the actor is a ``Supervisor`` (its children's exits go to it); ``None``: not
    known (a row written by an older version)."""
    decision: int | None = None
    """The number of the last supervisor decision (a bounce or revive) applied to the actor
    (see ``DECISION_BITS``)."""


class Fence(msgspec.Struct, frozen=True):
    """The activation a write is made for: the actor id and the epoch it was claimed at."""

    actor: str
    epoch: int


ACTOR_COLUMNS = (
    "id, parent, kind, spec, state, status, epoch, node, restarts, history, reason, seq, "
    "created_at, updated_at, restart_at, watchers, retry_step, supervisor, decision"
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
        supervisor=row[17],
        decision=row[18],
    )


_FENCE = "EXISTS (SELECT 1 FROM actors WHERE id = %(f_actor)s AND epoch = %(f_epoch)s)"


def _fence_params(fence: Fence | None) -> dict[str, Any]:
    return {"f_actor": fence.actor if fence else None, "f_epoch": fence.epoch if fence else None}


def _fence_sql(fenced: bool) -> str:
    return _FENCE if fenced else "true"


# -- the start message ------------------------------------------------------------------------


def start_message_cte(made: str) -> str:
    """The ``started`` step of a statement that creates or revives an actor (its row is the
    CTE named ``made``): in the same transaction, send the new incarnation the start message
    given as ``%(start)s`` and ``%(start_tags)s``, under ``{id}/started/{seq}-{epoch}``.
    """
    return f"""started AS (
    INSERT INTO promises (id, param, tags, kind, recipient)
    SELECT {made}.id || '/started/' || {made}.seq || '-' || {made}.epoch, %(start)s::jsonb,
           %(start_tags)s::jsonb, 'message', {made}.id
    FROM {made} WHERE %(start)s::jsonb IS NOT NULL
    ON CONFLICT (id) DO NOTHING
)"""


def start_params(start: tuple[str, str] | None) -> dict[str, str | None]:
    """The parameters of ``start_message_cte`` for ``start`` (an encoded message, its tags)."""
    return {"start": start[0] if start else None, "start_tags": start[1] if start else "{}"}


# -- spawn -------------------------------------------------------------------------------------

_SPAWN = f"""
WITH s AS (
    INSERT INTO actors (id, parent, kind, spec, state, supervisor, node)
    SELECT %(id)s, %(parent)s, %(kind)s, %(spec)s::jsonb, %(state)s::jsonb, %(supervisor)s,
           %(node)s
    WHERE {{fence}} AND (%(first)s::text IS NULL OR NOT EXISTS (
        SELECT 1 FROM promises WHERE id = %(first)s::text
           AND (kind <> 'message' OR recipient IS DISTINCT FROM %(id)s::text)))
    ON CONFLICT (id) DO UPDATE
        SET status = 'running', state = EXCLUDED.state, spec = EXCLUDED.spec, reason = NULL,
            parent = EXCLUDED.parent, restart_at = NULL, updated_at = clock_timestamp(),
            supervisor = EXCLUDED.supervisor, node = EXCLUDED.node
        WHERE actors.status IN ('stopped', 'failed') AND actors.kind = EXCLUDED.kind
          AND %(revive)s
    RETURNING {ACTOR_COLUMNS}
), {start_message_cte("s")}
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
    supervisor: bool = False,
    node: str | None = None,
    first: str | None = None,
) -> Op:
    """The op that creates an actor, or finds it.

    ``node`` places it: the spawning node, when it can host the type (it then holds the actor
    from the start); ``None`` leaves it to the node the placement picks among those that can.

    ``supervisor`` records whether the actor is a ``Supervisor``, so its children's exits are
    routed to it by any node, whether or not that node can load its class.

    A stopped or failed actor of the same kind is brought back with the given state (unless
    ``revive`` is false: then it is found, as it is). With
    ``step``, that step is kept in the same transaction (a spawn made from inside a handler).
    With ``start`` (an encoded message and its tags), a created or revived actor is sent that
    message in the same transaction (a supervisor's order to start its children). ``first``:
    the id of the message ``step`` sends the actor (``Runtime.spawn_ask``); the actor is made
    only if that id is free or is a message to it, so a taken id keeps nothing.
    """
    params = {
        "id": id,
        "parent": parent,
        "kind": kind,
        "spec": spec,
        "state": state,
        **start_params(start),
        "revive": revive,
        "supervisor": supervisor,
        "node": node,
        "first": first,
        **_fence_params(fence),
    }
    statements: list[Any] = [
        (_SPAWN.replace("{fence}", _fence_sql(fence is not None)), params),
        (_GET_ACTOR, (id,)),
    ]
    if step is not None:
        # A spawn is rare: run the step's read-back statement always, inside the batch.
        statements.extend(step.statements)
        if step.reread is not None:
            statements.append(step.reread)

    def finish(rows: list[Rows], xid: int | None) -> tuple[ActorRecord, bool, Any]:
        written, existing = rows[0], rows[1]
        if written:
            record, created = actor_from_row(written[0]), True
        elif not existing:
            if first is not None and step is not None:
                step.finish(rows[2:], xid)  # raises what took the message's id
            raise FencedError(
                f"spawning {id!r}: the activation of {fence.actor if fence else '?'} is stale"
            )
        else:
            record, created = actor_from_row(existing[0]), False
            if record.kind != kind:
                raise ActorExistsError(
                    f"an actor with the id {id!r} exists already, of kind {record.kind}, not {kind}"
                )
        return record, created, step.finish(rows[2:], xid) if step is not None else None

    return Op(statements, finish, label="spawn")


# -- claiming -----------------------------------------------------------------------------------

DECISION_BITS = 20
"""A supervisor's decisions are numbered ``message seq << DECISION_BITS | action index``: each
bounce or revive it applies to a child records its number in the child's ``decision``, so the
same decision applied again (a replay after a kill) changes nothing, and a later decision's
number is always larger."""

PENDING_RESTART = """coalesce((
    SELECT true FROM promises m
    CROSS JOIN LATERAL (
        SELECT value FROM promises WHERE id = m.id || '/1' AND state = 'resolved' OFFSET 0
    ) plan
    CROSS JOIN LATERAL jsonb_array_elements(plan.value->'actions') WITH ORDINALITY AS a(act, n)
    WHERE m.recipient = {actor}.parent AND m.state = 'pending' AND m.kind = 'message'
      AND m.tags->>'promissory:type' = 'ChildExit'
      AND a.act->>'child' = {actor}.id AND a.act->>'type' = 'restart'
      AND coalesce({actor}.decision, -1) < ((m.seq << 20) | (a.n - 1))
    LIMIT 1
), false)"""
"""Whether the actor's supervisor has kept a plan (the first step of a ``ChildExit`` message it
is still handling) that restarts the actor, and has not applied that restart yet: until it
does, no node may activate the actor (recovery would run it only to have it cut off). A
restart is the plan action ``Revive``, stored with the tag ``'restart'``.

Written as a subquery run per actor row (``LIMIT 1`` keeps the planner from making it a
join), whose plan is looked up by its id (``OFFSET 0`` keeps it a lookup): both index
probes whatever the planner's estimates, which on tables it has no statistics for yet (a
new database, a burst of spawns) made it scan every pending message and every promise."""

_CLAIM = f"""
UPDATE actors SET epoch = epoch + 1, node = %(node)s, updated_at = clock_timestamp()
WHERE id = %(id)s AND status = 'running'
  AND (node IS NULL OR node = %(node)s OR %(force)s)
  AND NOT {PENDING_RESTART.format(actor="actors")}
RETURNING {ACTOR_COLUMNS}
"""


def claim_op(actor_id: str, node: str, *, force: bool = False) -> Op:
    """The op that makes a new activation of an actor on ``node``.

    Its result is the row with the new epoch, or ``None`` when the actor is not alive, another
    node holds it, or its supervisor has decided to restart it and not done so yet (a plan
    kept, its revive not applied: the revive activates it).
    """
    params = {"id": actor_id, "node": node, "force": force}

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    return Op([(_CLAIM, params)], finish, label="claim")


def decode_spec(record: ActorRecord) -> dict[str, Any]:
    """The child spec of an actor as plain JSON values."""
    spec: dict[str, Any] = msgspec.json.decode(record.spec)
    return spec


# -- watching ------------------------------------------------------------------------------------

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
