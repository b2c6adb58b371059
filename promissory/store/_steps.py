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
from ._actors import _FENCE, Fence, _fence_params, _fence_sql
from ._promises import COLUMNS, prefix_bounds, promise_from_row, written_by
from ._records import Outcome, Promise, PromiseKind, PromiseState
from ._writer import Event, Group, Op, Rows

# -- send --------------------------------------------------------------------------------------

_SEND = f"""
WITH target AS (SELECT status FROM actors WHERE id = %(recipient)s FOR KEY SHARE)
INSERT INTO promises (id, param, tags, timeout_at, kind, recipient, fingerprint)
SELECT %(id)s, %(param)s::jsonb, %(tags)s::jsonb,
       CASE WHEN %(secs)s::float8 IS NULL THEN %(at)s::timestamptz
            ELSE clock_timestamp() + %(secs)s::float8 * interval '1 second' END,
       'message', %(recipient)s, %(fp)s
FROM target
WHERE target.status IN ('running', 'restarting') AND {{fence}}
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""
_ACTOR_STATUS = "SELECT status FROM actors WHERE id = %s"
_GET = f"SELECT {COLUMNS} FROM promises WHERE id = %s"


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
) -> Op:
    """The op that writes a message to an alive actor; an existing id is returned as it is.

    ``fp``: the fingerprint of the call, when the message is a step of a handler.
    """
    params = {
        "fp": fp,
        "id": id,
        "recipient": recipient,
        "param": param,
        "tags": tags,
        "secs": secs,
        "at": at,
        **_fence_params(fence),
    }
    statements: list[Any] = [
        (_SEND.replace("{fence}", _fence_sql(fence)), params),
        (_GET, (id,)),
        (_ACTOR_STATUS, (recipient,)),
    ]

    def finish(rows: list[Rows], xid: int | None) -> Outcome:
        inserted, existing, status = rows
        if inserted:
            return Outcome(promise_from_row(inserted[0]), True)
        if existing:
            row = existing[0]
            found = promise_from_row(row)
            if found.kind is not PromiseKind.MESSAGE or found.recipient != recipient:
                taken = f"a message to {found.recipient!r}" if found.recipient else "a promise"
                raise InvalidInputError(
                    f"the id {id!r} is taken by {taken}; a message to {recipient!r} needs "
                    "another id"
                )
            return Outcome(found, xid is not None and written_by(row, xid))
        if not status:
            raise ActorNotFoundError(f"no actor has the id {recipient!r}")
        if status[0][0] not in ("running", "restarting"):
            raise ActorStoppedError(f"actor {recipient!r} is {status[0][0]}; message not sent")
        raise FencedError(f"sending to {recipient!r}: the sending activation is stale")

    # No in-process event: the sender hands the message to its host itself (with the row),
    # and other processes hear of it by NOTIFY.
    return Op(statements, finish)


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
    kind: str,
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
    RETURNING id
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
SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM a), {_FENCE}
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

    def finish(rows: list[Rows], xid: int | None) -> Completion:
        settled, _, fenced_ok = rows[0][0]
        if settled:
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
        return [("settled", message_id)] if result is Completion.DONE else []

    return Op([(_COMPLETE, params)], finish, events)


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
        return [("settled", message_id)] if settled else []

    return Op([(_TIME_OUT, params), (_CLEANED, params)], finish, events)


_SUSPEND = f"""
WITH m AS (
    UPDATE promises SET awaiting = %(awaiting)s
    WHERE id = %(id)s AND state = 'pending' AND {_FENCE}
    RETURNING id
)
SELECT (SELECT count(*) FROM m),
       coalesce((SELECT array_agg(id) FROM promises WHERE id = ANY(%(awaiting)s)
                 AND (state <> 'pending' OR timeout_at <= clock_timestamp())), '{{}}')
"""


def suspend_op(message_id: str, fence: Fence, awaiting: Sequence[str]) -> Op:
    """The op that records what a message waits on; its result lists those already settled.

    Raises (from the future) ``FencedError`` when the activation is stale or the message is no
    longer pending.
    """
    params = {"id": message_id, "awaiting": list(awaiting), **_fence_params(fence)}

    def finish(rows: list[Rows], xid: int | None) -> list[str]:
        updated, settled = rows[0][0]
        if not updated:
            raise FencedError(f"suspending {message_id!r}: not pending, or the activation is stale")
        return list(settled)

    return Op([(_SUSPEND, params)], finish)


# -- reads -------------------------------------------------------------------------------------

MAILBOX = f"""
(SELECT {COLUMNS}, awaiting FROM promises
 WHERE recipient = %(actor)s AND state = 'pending' ORDER BY seq LIMIT %(limit)s)
UNION ALL
(SELECT {COLUMNS}, awaiting FROM promises
 WHERE recipient = %(actor)s AND state <> 'pending' AND awaiting IS NOT NULL)
ORDER BY seq
"""
"""An actor's mailbox, oldest first: its pending messages, and the canceled or timed-out ones
still marked for a cleanup replay (two partial indexes serve it)."""

MARKED = """
SELECT 1 FROM promises
WHERE recipient = %s AND state <> 'pending' AND awaiting IS NOT NULL LIMIT 1
"""
"""Whether an actor has a canceled or timed-out message still marked for its cleanup replay."""


def journal_query(message_id: str, recipient: str, seq: int) -> tuple[str, tuple[Any, ...]]:
    """The query that loads a message and its steps (its direct children) in one round trip,
    with any pending message to the same actor that came before it (column 16 says which).
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
