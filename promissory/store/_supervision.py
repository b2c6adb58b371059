"""Supervision's writes on actor rows: exits, restarts, bounces, and ends.

A supervised child's exit is recorded and sent to its supervisor in one statement
(``exit_op``); the supervisor's decisions are applied with ``revive_op`` (the next
incarnation), ``bounce_op`` (a new epoch for the same incarnation) and ``end_actor_op`` (the
end, its mailbox rejected); ``mark_ending_op`` decides, durably, that a whole tree ends.
Stopping or failing an actor locks its row ``FOR UPDATE`` before rejecting its mailbox, which
waits out any sender holding it ``FOR KEY SHARE`` (see ``_handling``), so no message can slip in
behind the end.
"""

from __future__ import annotations

from ._actors import (
    ACTOR_COLUMNS,
    ActorRecord,
    ActorStatus,
    actor_from_row,
    start_message_cte,
    start_params,
)
from ._handling import EARLIER, Sent, sent_from_row
from ._ops import Event, EventKind, Op, Rows
from ._promises import COLUMNS, prefix_bounds, promise_from_row, written_by
from ._reads import MAILBOX_AND_HEAD, mailbox_and_head_from
from ._records import PromiseState
from ._take_up import MAILBOX_LIMIT, TakenUp, taken_up

__all__ = [
    "bounce_op",
    "due_restart_op",
    "end_actor_op",
    "exit_op",
    "mark_ending_op",
    "revive_op",
]


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
        return [(EventKind.SETTLED, id) for id in result[1]]

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
        label="end",
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


def mark_ending_op(actor_id: str, channel: str, cancel_value: str | None = None) -> Op:
    """The op that decides, durably, that ``actor_id`` and its whole subtree end.

    In one transaction: the actor is marked ``{"ending": "shutdown"}``; with ``cancel_value``
    (an encoded cancel reason) every pending message of its mailbox and of the mailboxes of
    every actor under it is canceled, and by the cascade every pending promise under them;
    and every runtime listening on ``channel`` is told (``ending``), so the node hosting the
    actor ends the tree, children first. Whatever
    is left of it when a process dies half-way is ended by the next recovery pass
    (``Store.ending_actors``).
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
        return [(EventKind.SETTLED, id) for id in result[2]]

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
      AND (NOT %(supervised)s
           OR EXISTS (SELECT 1 FROM actors p WHERE p.id = %(parent)s AND p.supervisor))
    RETURNING epoch, seq
), parent AS (
    SELECT status, epoch, kind, node FROM actors WHERE id = %(parent)s FOR KEY SHARE
), sent AS (
    INSERT INTO promises (id, param, tags, kind, recipient)
    SELECT %(message_id)s || '/' || child.seq || '-' || child.epoch,
           jsonb_set(jsonb_set(%(param)s::jsonb, '{{epoch}}', to_jsonb(child.epoch)),
                     '{{at}}', to_jsonb(extract(epoch FROM clock_timestamp())::float8)),
           %(tags)s::jsonb, 'message', %(parent)s
    FROM child, parent WHERE parent.status IN ('running', 'restarting')
    ON CONFLICT (id) DO NOTHING
    RETURNING {COLUMNS}
)
SELECT sent.*, parent.epoch, parent.kind, parent.node,
       ARRAY(SELECT e.seq FROM promises e
             WHERE e.recipient = %(parent)s AND e.state = 'pending' AND e.seq < sent.seq
             ORDER BY e.seq LIMIT {EARLIER + 1})
FROM sent, parent
"""


_LATEST_EXIT = f"""
SELECT {COLUMNS} FROM promises
WHERE id >= %s AND (%s::text IS NULL OR id < %s) AND recipient = %s
ORDER BY seq DESC LIMIT 1
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
    supervised: bool = False,
) -> Op:
    """The op that records a supervised child's failure and tells its supervisor.

    The child goes to ``restarting`` (no activation starts until the supervisor decides) with
    a new epoch that fences off the failed activation, and the supervisor is sent ``param``
    as message ``{message_id}/{new epoch}``. Its result is that message, or ``None`` when the
    child was not in the running activation ``epoch`` any more or the supervisor is not alive
    (or, with ``supervised``, is not a ``Supervisor``). The message is a ``Sent``, with what
    the supervisor's host needs to hand it on; its param holds the child's new ``epoch`` and
    the database's time, ``at``. ``retry_step`` names the step whose failure crashed the
    child: its next incarnation tries that step again rather than replaying the failure.
    """
    params = {
        "supervised": supervised,
        "retry_step": retry_step,
        "id": actor_id,
        "epoch": epoch,
        "parent": parent,
        "message_id": message_id,
        "param": param,
        "tags": tags,
        "reason": reason,
    }

    def finish(rows: list[Rows], xid: int | None) -> Sent | None:
        if rows[0]:
            return sent_from_row(rows[0][0])
        # Read back after an unknown outcome (the connection dropped inside the COMMIT): the
        # op ran and moved the epoch, so running it again matches nothing; the notice it wrote
        # tells it was this op, by its xmin.
        found = rows[-1]
        if xid is not None and found and written_by(found[0], xid):
            return Sent(promise_from_row(found[0]), True)
        return None

    low, high = prefix_bounds(message_id + "/")
    reread = (_LATEST_EXIT, (low, high, high, parent))
    return Op([(_EXIT, params)], finish, reread=reread, label="exit")


_REVIVE = f"""
WITH r AS (
    UPDATE actors SET
        status = CASE WHEN %(delay)s::float8 IS NULL THEN 'running' ELSE 'restarting' END,
        restart_at = CASE WHEN %(delay)s::float8 IS NULL THEN NULL
                          ELSE clock_timestamp() + %(delay)s::float8 * interval '1 second' END,
        epoch = epoch + 1, restarts = restarts + 1, node = %(node)s, reason = NULL,
        decision = coalesce(%(decision)s, decision),
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
      AND (%(decision)s::bigint IS NULL OR coalesce(decision, -1) < %(decision)s)
      AND (%(with_settle)s::text IS NULL OR EXISTS (
          SELECT 1 FROM promises s WHERE s.id = %(with_settle)s
             AND s.xmin::text = (txid_current() %% 4294967296)::text))
    RETURNING {ACTOR_COLUMNS}
), {start_message_cte("r")}
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
    decision: int | None = None,
    node: str | None = None,
    with_settle: str | None = None,
    take: bool = False,
) -> Op:
    """The op that starts an actor's next incarnation (now, or after ``delay`` seconds).

    A new epoch fences off any activation left from before; the mailbox and the state
    snapshot carry over (``state`` replaces the snapshot when given). ``from_stopped`` also
    brings back a stopped or failed actor (``restart_child``). The restart's time is added to
    the actor's ``history`` (the last 20 are kept), unless ``history`` replaces it. ``start``
    is sent to the new incarnation, as with ``spawn_op``. ``node`` holds the new incarnation
    (the node restarting it, if it hosts the type; ``None``: the placement's pick). With
    ``decision`` (a supervisor's
    decision number), nothing happens if that decision, or a later one, was applied already.
    With ``with_settle`` (a message id), it only acts in the transaction that settles that
    message (a supervisor's decision is written with the settle of the exit it decides on:
    a settle that is fenced off, or finds the message settled already, revives nothing).
    Its result is the row, or ``None`` when there is no such actor or nothing happened.

    With ``take``, an incarnation that starts now on ``node`` (the node running the op) has
    what its activation reads first (its mailbox and its head message's journal, as
    ``Store.mailbox_and_head`` reads them) read by one more statement of the same transaction:
    the restarted actor starts with no read of its own. With ``take`` the result is a
    ``TakenUp`` (or ``None``) either way: one the revive did not read for (a restart to come,
    or on another node) holds the row alone and says its mailbox is to be read.
    """
    params = {
        "with_settle": with_settle,
        "node": node,
        "decision": decision,
        "retry_step": retry_step,
        "id": actor_id,
        "delay": delay,
        "from_stopped": from_stopped,
        "state": state,
        "history": history,
        **start_params(start),
    }

    reads = []
    if take and delay is None and node is not None:
        reads = [(MAILBOX_AND_HEAD, {"actor": actor_id, "limit": MAILBOX_LIMIT})]

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | TakenUp | None:
        if not rows[0]:
            return None
        record = actor_from_row(rows[0][0])
        if not take:
            return record
        if not reads:
            # Not read for (it starts later, or elsewhere): its activation reads its mailbox.
            return TakenUp.unread(record)
        return taken_up(record, *mailbox_and_head_from(rows[1]))

    return Op([(_REVIVE, params), *reads], finish, label="revive")


_BOUNCE = f"""
UPDATE actors SET epoch = epoch + 1, node = %(node)s, updated_at = clock_timestamp(),
                  decision = coalesce(%(decision)s, decision)
WHERE id = %(id)s
  AND (%(decision)s::bigint IS NULL OR coalesce(decision, -1) < %(decision)s)
RETURNING {ACTOR_COLUMNS}
"""


def bounce_op(actor_id: str, decision: int | None = None, node: str | None = None) -> Op:
    """The op that fences off an actor's activation (a new epoch) without ending the actor;
    with ``decision``, only if that decision (or a later one) was not applied already.
    """

    def finish(rows: list[Rows], xid: int | None) -> ActorRecord | None:
        return actor_from_row(rows[0][0]) if rows[0] else None

    params = {"id": actor_id, "decision": decision, "node": node}
    return Op([(_BOUNCE, params)], finish, label="bounce")


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

    return Op([(_DUE_RESTART, {"id": actor_id})], finish, label="restart")
