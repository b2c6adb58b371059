"""Writes made while handling messages: sending, keeping steps, completing, suspending.

Every write on behalf of an activation is fenced by its epoch in the same statement (see
``_actors``); a message is inserted only while its recipient is alive, under a share lock on
the recipient's row. Each op is safe to run again after it committed (the writer's rule).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import ActorNotFoundError, ActorStoppedError, FencedError, InvalidInputError
from ._actors import (
    _FENCE,
    ACTOR_COLUMNS,
    PENDING_RESTART,
    ActorRecord,
    Fence,
    _fence_params,
    _fence_sql,
    actor_from_row,
)
from ._ops import Event, EventKind, Group, Op, Rows
from ._promises import COLUMNS, promise_from_row, written_by
from ._records import Outcome, Promise, PromiseKind, PromiseState

# -- send --------------------------------------------------------------------------------------

EARLIER = 256
"""How many earlier pending messages a send lists (more: the activation reads its mailbox).

An activation starts a message handed to it with no read when it has seen every one listed;
an actor with a backlog (a supervisor taking many exits at once) is the one that needs the
list long. Listing costs the send an index range of at most this many entries."""

_HANDED = """handed AS (
    SELECT set_config(
        'promissory.handed',
        CASE WHEN %(handed)s::text IS NOT NULL AND {holder} = %(handed)s::text
             THEN %(id)s ELSE '' END,
        true)
)"""
"""Names the message its sending node (``handed``) hands to its actor itself, for the NOTIFY
trigger: set to the message's id when that node holds the recipient (``{holder}``: the
recipient's node as the statement found it), and the trigger is not fired for it (schema
migration 10). Set for the rest of the transaction, and matched by the message's id: no
other row is spared."""

_SEND = f"""
WITH target AS (
    SELECT status, epoch, kind, node FROM actors WHERE id = %(recipient)s FOR KEY SHARE
), {_HANDED.replace("{holder}", "(SELECT target.node FROM target)")}, sent AS (
    INSERT INTO promises (id, param, tags, timeout_at, kind, recipient, fingerprint)
    SELECT %(id)s, %(param)s::jsonb, %(tags)s::jsonb,
           CASE WHEN %(secs)s::float8 IS NULL THEN %(at)s::timestamptz
                ELSE clock_timestamp() + %(secs)s::float8 * interval '1 second' END,
           'message', %(recipient)s, %(fp)s
    FROM target
    WHERE target.status IN ('running', 'restarting') AND {{fence}}
      AND (%(kind)s::text IS NULL OR target.kind = %(kind)s::text)
    ON CONFLICT (id) DO NOTHING
    RETURNING {COLUMNS}
)
{{claim}}
SELECT sent.*, target.epoch, target.kind, target.node,
       ARRAY(SELECT e.seq FROM promises e
             WHERE e.recipient = %(recipient)s AND e.state = 'pending' AND e.seq < sent.seq
             ORDER BY e.seq LIMIT {EARLIER + 1}){{claimed}}
FROM sent CROSS JOIN target CROSS JOIN handed{{join}}
"""
"""One statement: the message, and what its recipient's host needs to run it with no read
(the recipient's epoch, kind and node, and the pending messages to it that came before)."""

_SEND_CLAIM = f""", claimed AS (
    UPDATE actors SET epoch = epoch + 1, node = %(claim)s, updated_at = clock_timestamp()
    WHERE ctid = (
        SELECT ctid FROM actors WHERE id = %(recipient)s FOR NO KEY UPDATE SKIP LOCKED
    ) AND status = 'running' AND node = %(claim)s
      AND EXISTS (SELECT 1 FROM sent)
      AND NOT {PENDING_RESTART.format(actor="actors")}
    RETURNING {ACTOR_COLUMNS}
)"""
"""A send that also claims its recipient for the sending node (a new epoch), as ``claim_op``
would, when that node holds the actor with no activation of it (a passivated actor): the
activation then starts from the row with no write of its own. Only a message that was
written claims; an actor no node holds (the fleet's placement picks its node), one another
node holds, one whose restart is decided and not applied, or
whose row another transaction is changing or changed since the statement began (``SKIP
LOCKED``: the send never waits on the claim) is not claimed, and the send is as without it:
the activation claims for itself. The row is found by the ``ctid`` its lock returned: a
lookup whatever the planner's estimates (by ``id`` alone it chose, with no statistics yet,
the index of the node's actors and read every one)."""

_SEND_PLAIN = _SEND.replace("{claim}", "").replace("{claimed}", "").replace("{join}", "")
_SEND_CLAIMING = (
    _SEND.replace("{claim}", _SEND_CLAIM)
    .replace("{claimed}", ", claimed.*")
    .replace("{join}", " LEFT JOIN claimed ON true")
)

# Made once each (claiming or not, fenced or not): a send is the hottest statement, and a
# string built per send is hashed again wherever the pipeline looks it up.
_SENDS = {
    (claiming, fenced): (_SEND_CLAIMING if claiming else _SEND_PLAIN).replace(
        "{fence}", _fence_sql(fenced)
    )
    for claiming in (False, True)
    for fenced in (False, True)
}

_SEND_FAILED = f"""
SELECT (SELECT status FROM actors WHERE id = %s), p.*
FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT {COLUMNS} FROM promises WHERE id = %s) p ON true
"""
"""Why a send wrote nothing: the recipient's status and the promise at the id, if any."""

_SEND_WIDTH = COLUMNS.count(",") + 1
_GET = f"SELECT {COLUMNS} FROM promises WHERE id = %s"


class Sent(Outcome, frozen=True):
    """What a send did (an ``Outcome``), and, when it wrote the message, what the recipient's
    host needs to hand it on without reading it back: the recipient's ``epoch``, ``kind`` and
    ``node`` as they were when it was written, and the seqs of the pending messages to the
    recipient that came ``earlier`` (``None``: too many to list). ``claimed``: the
    recipient's row as a send that claims it left it (its new epoch), if it did.
    """

    epoch: int | None = None
    kind: str | None = None
    node: str | None = None
    earlier: tuple[int, ...] | None = None
    claimed: ActorRecord | None = None


def sent_from_row(row: Sequence[Any]) -> Sent:
    """A ``Sent`` from a row of ``COLUMNS`` followed by the recipient's epoch, kind and node,
    the seqs of the earlier pending messages to it (at most ``EARLIER`` + 1) and, from a send
    that claims, the recipient's claimed row (``ACTOR_COLUMNS``, all null if not claimed).
    """
    epoch, kind, node, earlier = row[_SEND_WIDTH : _SEND_WIDTH + 4]
    listed = tuple(earlier) if len(earlier) <= EARLIER else None
    rest = row[_SEND_WIDTH + 4 :]
    claimed = actor_from_row(rest) if rest and rest[0] is not None else None
    return Sent(promise_from_row(row), True, epoch, kind, node, listed, claimed)


def send_op(
    id: str,
    recipient: str,
    *,
    param: str,
    tags: str,
    secs: float | None = None,
    at: datetime | None = None,
    fence: Fence | None = None,
    fp: str | None = None,
    claim: str | None = None,
    kind: str | None = None,
    handed: str | None = None,
) -> Op:
    """The op that writes a message to an alive actor; an existing id is returned as it is.

    Its result is a ``Sent``. ``fp``: the fingerprint of the call, when the message is a step
    of a handler. ``claim``: a node id; a written message also claims its recipient for
    that node when it may (``Sent.claimed``; see ``_SEND_CLAIM``). ``kind``: the message is
    written only if the recipient is of that type (a spawn's first message: a spawn that
    finds the id taken by another type keeps nothing). ``handed``: the sending node's id,
    when it hands the message to the recipient's activation itself if it holds the actor
    (``Delivery.sent``): no NOTIFY is sent for it then (see ``_HANDED``).
    """
    params = {
        "handed": handed,
        "claim": claim,
        "kind": kind,
        "fp": fp,
        "id": id,
        "recipient": recipient,
        "param": param,
        "tags": tags,
        "secs": secs,
        "at": at,
        **_fence_params(fence),
    }

    def finish(rows: list[Rows], xid: int | None) -> Sent:
        if rows[0] and xid is None:
            return sent_from_row(rows[0][0])
        status, *existing = rows[-1][0]
        if existing[0] is not None:
            found = promise_from_row(existing)
            if found.kind is not PromiseKind.MESSAGE or found.recipient != recipient:
                taken = f"a message to {found.recipient!r}" if found.recipient else "a promise"
                raise InvalidInputError(
                    f"the id {id!r} is taken by {taken}; a message to {recipient!r} needs "
                    "another id"
                )
            return Sent(found, xid is not None and written_by(existing, xid))
        if status is None:
            raise ActorNotFoundError(f"no actor has the id {recipient!r}")
        if status not in ("running", "restarting"):
            raise ActorStoppedError(f"actor {recipient!r} is {status}; message not sent")
        raise FencedError(f"sending to {recipient!r}: the sending activation is stale")

    # No in-process event: the sender hands the message to its host itself (with the row),
    # and other processes hear of it by NOTIFY.
    return Op(
        [(_SENDS[bool(claim), fence is not None], params)],
        finish,
        label="send",
        reread=(_SEND_FAILED, (recipient, id)),
    )


# -- spawn with a first message ----------------------------------------------------------------

_SPAWN_SEND = f"""
WITH {_HANDED.replace("{holder}", "coalesce(%(claim)s::text, %(node)s::text)")}, made AS (
    INSERT INTO actors (id, kind, spec, state, supervisor, node, epoch)
    SELECT %(recipient)s, %(kind)s, %(spec)s::jsonb, %(state)s::jsonb, %(supervisor)s,
           coalesce(%(claim)s, %(node)s), CASE WHEN %(claim)s::text IS NULL THEN 0 ELSE 1 END
    WHERE NOT EXISTS (SELECT 1 FROM promises WHERE id = %(id)s)
    ON CONFLICT (id) DO NOTHING
    RETURNING {ACTOR_COLUMNS}
), sent AS (
    INSERT INTO promises (id, param, tags, timeout_at, kind, recipient)
    SELECT %(id)s, %(param)s::jsonb, %(tags)s::jsonb,
           CASE WHEN %(secs)s::float8 IS NULL THEN %(at)s::timestamptz
                ELSE clock_timestamp() + %(secs)s::float8 * interval '1 second' END,
           'message', made.id
    FROM made
    RETURNING {COLUMNS}
)
SELECT sent.*, made.* FROM sent CROSS JOIN made CROSS JOIN handed
"""
"""A new top-level actor and its first message in one statement, the actor born claimed by
the sending node (epoch 1, as a spawn then a claim would leave it) when ``claim`` is given.
It writes nothing when the actor's id or the message's is there already."""


_SPAWN_SENT = f"""
SELECT s.*, m.* FROM (SELECT {COLUMNS} FROM promises WHERE id = %s) s
CROSS JOIN (SELECT {ACTOR_COLUMNS} FROM actors WHERE id = %s) m
"""
"""The message and its actor, as ``_SPAWN_SEND`` returns them (read back after a lost answer)."""


class Occupied(Exception):
    """``spawn_send_op`` wrote nothing: the actor, or the message's id, exists already (the
    caller takes the slower way, a spawn that finds or revives, then a send).
    """


def spawn_send_op(
    id: str,
    recipient: str,
    *,
    param: str,
    tags: str,
    kind: str,
    spec: str,
    state: str | None,
    supervisor: bool,
    node: str | None,
    claim: str | None,
    secs: float | None = None,
    at: datetime | None = None,
    handed: str | None = None,
) -> Op:
    """The op that makes top-level actor ``recipient`` of type ``kind`` and writes it message
    ``id``, in one statement (``Runtime.spawn_ask``'s way for a new actor with no start
    message). Its result is a ``Sent`` (``claimed``: the new row, when ``claim`` names this
    node); it raises ``Occupied`` when either id exists already, having written nothing.
    ``handed``: as for ``send_op``.
    """
    params = {
        "handed": handed,
        "id": id,
        "recipient": recipient,
        "param": param,
        "tags": tags,
        "kind": kind,
        "spec": spec,
        "state": state,
        "supervisor": supervisor,
        "node": node,
        "claim": claim,
        "secs": secs,
        "at": at,
    }

    def finish(rows: list[Rows], xid: int | None) -> Sent:
        if rows[0] and xid is None:
            row = rows[0][0]
        elif xid is not None and rows[-1] and written_by(rows[-1][0], xid):
            row = rows[-1][0]  # read back after a lost COMMIT answer: it was this op's
        else:
            raise Occupied(f"{recipient!r} or {id!r} exists already")
        made = actor_from_row(row[_SEND_WIDTH:])
        claimed = made if claim is not None else None
        return Sent(promise_from_row(row), True, 0, kind, made.node, (), claimed)

    return Op([(_SPAWN_SEND, params)], finish, label="spawn", reread=(_SPAWN_SENT, (id, recipient)))


# -- steps -------------------------------------------------------------------------------------

_STEP = f"""
INSERT INTO promises (id, state, value, kind, fingerprint, attempt, next_attempt_at, settled_at)
SELECT %(id)s, %(state)s, %(value)s::jsonb, 'step', %(fp)s, %(attempt)s, %(next)s,
       CASE WHEN %(state)s = 'pending' THEN NULL ELSE clock_timestamp() END
WHERE {_FENCE}
ON CONFLICT (id) DO UPDATE
    SET state = EXCLUDED.state, value = EXCLUDED.value, attempt = EXCLUDED.attempt,
        next_attempt_at = EXCLUDED.next_attempt_at, settled_at = EXCLUDED.settled_at
    WHERE promises.state = 'pending' AND {_FENCE}
RETURNING {COLUMNS}
"""

_STEP_MANY = f"""
INSERT INTO promises (id, state, value, kind, fingerprint, attempt, next_attempt_at, settled_at)
SELECT v.vid, v.vstate, v.vvalue::jsonb, 'step', v.vfp, v.vattempt, v.vnext,
       CASE WHEN v.vstate = 'pending' THEN NULL ELSE clock_timestamp() END
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::timestamptz[],
            %s::text[], %s::bigint[])
     WITH ORDINALITY AS v(vid, vstate, vvalue, vfp, vattempt, vnext, vactor, vepoch, n)
WHERE EXISTS (SELECT 1 FROM actors a WHERE a.id = v.vactor COLLATE "C" AND a.epoch = v.vepoch)
ORDER BY v.n
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""
"""The first record of many steps at once (a step with a row already takes ``_STEP``)."""

_NOW_STEP = f"""
INSERT INTO promises (id, state, value, kind, fingerprint, settled_at)
SELECT %(id)s, 'resolved', to_jsonb(clock_timestamp()), 'step', %(fp)s, clock_timestamp()
WHERE {_FENCE}
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""


def step_op(
    id: str,
    fence: Fence,
    *,
    state: PromiseState,
    value: str | None,
    fingerprint: str,
    attempt: int = 1,
    next_attempt_at: datetime | None = None,
    first: bool = False,
) -> Op:
    """The op that keeps a step's outcome (or, while it retries, its attempt count).

    A step kept already (by an earlier activation) is returned as it is: the first record wins.
    ``first`` says the step has no row yet, so it may share a multi-row statement with others.
    """
    params = {
        "id": id,
        "state": state.value,
        "value": value,
        "fp": fingerprint,
        "attempt": attempt,
        "next": next_attempt_at,
        **_fence_params(fence),
    }
    group = None
    if first:
        values = (
            id,
            state.value,
            value,
            fingerprint,
            attempt,
            next_attempt_at,
            fence.actor,
            fence.epoch,
        )
        group = Group(_STEP_MANY, id, values)
    return Op(
        [(_STEP, params)],
        _finish_step(id, fence),
        keys=(id,),
        reread=(_GET, (id,)),
        group=group,
        label="step",
    )


def now_step_op(id: str, fence: Fence, fingerprint: str) -> Op:
    """The op that keeps the database's clock as a step's value."""
    params = {"id": id, "fp": fingerprint, **_fence_params(fence)}
    return Op([(_NOW_STEP, params)], _finish_step(id, fence), keys=(id,), reread=(_GET, (id,)))


def _finish_step(id: str, fence: Fence) -> Any:
    def finish(rows: list[Rows], xid: int | None) -> Promise:
        written, existing = rows
        if written:
            return promise_from_row(written[0])
        if existing:
            return promise_from_row(existing[0])
        raise FencedError(f"step {id!r}: the activation of {fence.actor!r} is stale")

    return finish


_PROMISE_STEP = f"""
INSERT INTO promises (id, param, tags, timeout_at, kind, fingerprint, state, settled_at)
SELECT %(id)s, %(param)s::jsonb, %(tags)s::jsonb, t.at, %(kind)s, %(fp)s,
       CASE WHEN t.expired THEN
            CASE WHEN %(kind)s = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
            ELSE 'pending' END,
       CASE WHEN t.expired THEN t.at END
FROM (SELECT a.at, a.at <= clock_timestamp() AS expired
      FROM (SELECT coalesce(%(at)s::timestamptz,
                            clock_timestamp() + %(secs)s::float8 * interval '1 second') AS at) a) t
WHERE {_FENCE}
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""


def promise_step_op(
    id: str,
    fence: Fence,
    *,
    kind: PromiseKind,
    fingerprint: str,
    param: str | None = None,
    tags: str = "{}",
    secs: float | None = None,
    at: datetime | None = None,
) -> Op:
    """The op that creates a pending promise or timer as a step of a handler (fenced)."""
    params = {
        "id": id,
        "param": param,
        "tags": tags,
        "secs": secs,
        "at": at,
        "kind": kind,
        "fp": fingerprint,
        **_fence_params(fence),
    }
    return Op([(_PROMISE_STEP, params)], _finish_step(id, fence), keys=(id,), reread=(_GET, (id,)))


# -- completing, suspending and claiming -------------------------------------------------------

_COMPLETE = f"""
WITH m AS (
    UPDATE promises SET state = %(state)s, value = %(value)s::jsonb,
                        settled_at = clock_timestamp(), awaiting = NULL
    WHERE id = %(id)s AND state = 'pending'
      AND (timeout_at IS NULL OR timeout_at > clock_timestamp()) AND {_FENCE}
    RETURNING {COLUMNS}
), a AS (
    UPDATE actors SET
        state = CASE WHEN %(write_state)s THEN %(actor_state)s::jsonb ELSE state END,
        reason = CASE WHEN %(stopping)s::text IS NULL THEN reason
                      ELSE coalesce(reason, '{{}}'::jsonb)
                           || jsonb_build_object('stopping', %(stopping)s::text) END,
        updated_at = clock_timestamp()
    WHERE id = %(f_actor)s AND EXISTS (SELECT 1 FROM m)
      AND (%(write_state)s OR %(stopping)s::text IS NOT NULL)
    RETURNING id
)
SELECT (SELECT count(*) FROM a), {_FENCE}, m.*
FROM (SELECT 1) one LEFT JOIN m ON true
"""


class Completion(enum.StrEnum):
    """What completing a message did."""

    DONE = "done"
    """The message is settled with the reply, and the state snapshot written with it."""
    SETTLED_ALREADY = "settled_already"
    """The message had been settled by someone else (canceled, timed out): nothing written."""


def complete_op(
    message_id: str,
    fence: Fence,
    *,
    state: PromiseState,
    value: str | None,
    actor_state: str | None,
    write_state: bool = True,
    stopping: str | None = None,
) -> Op:
    """The op that settles a message with its reply and writes the actor's state, together.

    ``stopping`` (an exit kind) records, in the same transaction, that the handler ended its
    actor (``ctx.stop``), so a crash before the end is handled does not leave it running: the
    next activation finishes the job.

    Raises (from the future) ``FencedError`` when the activation is stale.
    """
    params = {
        "id": message_id,
        "state": state.value,
        "value": value,
        "actor_state": actor_state,
        "write_state": write_state,
        "stopping": stopping,
        **_fence_params(fence),
    }

    settled: list[Promise] = []

    def finish(rows: list[Rows], xid: int | None) -> Completion:
        _, fenced_ok, *message = rows[0][0]
        if message[0] is not None:
            settled[:] = [promise_from_row(message)]
            return Completion.DONE
        if not fenced_ok:
            raise FencedError(
                f"completing {message_id!r}: the activation of {fence.actor!r} is stale"
            )
        if xid is not None:
            # Read back after an unknown outcome: the message is settled, by us or not.
            return Completion.DONE
        return Completion.SETTLED_ALREADY

    def events(result: Completion) -> list[Event]:
        if result is not Completion.DONE:
            return []
        # The settled message rides along: an ``ask`` in this process reads no reply.
        if not settled:
            return [(EventKind.SETTLED, message_id)]
        return [(EventKind.SETTLED, message_id, settled[0])]

    return Op([(_COMPLETE, params)], finish, events, label="complete", settles=(message_id,))


_CLEANED = f"""
WITH m AS (
    UPDATE promises SET awaiting = NULL
    WHERE id = %(id)s AND state <> 'pending' AND awaiting IS NOT NULL AND {_FENCE}
    RETURNING id
)
UPDATE actors SET reason = coalesce(reason, '{{}}'::jsonb)
                           || jsonb_build_object('stopping', %(stopping)s::text)
WHERE id = %(f_actor)s AND %(stopping)s::text IS NOT NULL AND {_FENCE}
"""


_TIME_OUT = f"""
UPDATE promises SET state = 'rejected_timedout', value = NULL,
    settled_at = least(timeout_at, clock_timestamp())
WHERE id = %(id)s AND state = 'pending' AND timeout_at IS NOT NULL AND {_FENCE}
RETURNING id
"""


def cleaned_op(
    message_id: str, fence: Fence, stopping: str | None = None, *, timed_out: bool = False
) -> Op:
    """The op that clears a canceled message's mark once its handler has had its cleanup
    (recording, like ``complete_op``, that the handler ended its actor).

    ``timed_out``: the handler was cut off by the message's deadline, which this process may
    see pass a moment before the database's sweep does; the message is timed out here first
    (as the sweep would), so no mark is left for an actor that may have ended.
    """
    params = {"id": message_id, "stopping": stopping, **_fence_params(fence)}
    if not timed_out:
        return Op([(_CLEANED, params)], lambda rows, xid: None)

    def finish(rows: list[Rows], xid: int | None) -> bool:
        return bool(rows[0])

    def events(settled: bool) -> list[Event]:
        return [(EventKind.SETTLED, message_id)] if settled else []

    return Op([(_TIME_OUT, params), (_CLEANED, params)], finish, events)


_SUSPEND = f"""
WITH m AS (
    UPDATE promises SET awaiting = %(awaiting)s, wait_all = %(wait_all)s
    WHERE id = %(id)s AND state = 'pending' AND {_FENCE}
    RETURNING id
)
SELECT (SELECT count(*) FROM m), id,
       CASE WHEN timeout_at <= clock_timestamp() AND state = 'pending'
            THEN CASE WHEN kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
            ELSE state END
FROM promises WHERE id = ANY(%(awaiting)s)
UNION ALL SELECT (SELECT count(*) FROM m), NULL, NULL
"""


def suspend_op(
    message_id: str, fence: Fence, awaiting: Sequence[str], wait_all: bool = False
) -> Op:
    """The op that records what a message waits on (all of them, or any); its result is the
    state of each awaited promise that exists, as of the suspension.

    Raises (from the future) ``FencedError`` when the activation is stale or the message is no
    longer pending.
    """
    params = {
        "id": message_id,
        "awaiting": list(awaiting),
        "wait_all": wait_all,
        **_fence_params(fence),
    }

    def finish(rows: list[Rows], xid: int | None) -> dict[str, PromiseState]:
        if not rows[0][0][0]:
            raise FencedError(f"suspending {message_id!r}: not pending, or the activation is stale")
        return {id: PromiseState(state) for _, id, state in rows[0] if id is not None}

    return Op([(_SUSPEND, params)], finish, label="suspend")
