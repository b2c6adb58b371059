"""Taking many actors up at once: one claim for all of them, their mailboxes and journals read
in the same transaction.

A node that adopts a dead node's actors, or starts on a database full of work, would otherwise
claim each actor, read its mailbox, what its head message waits on and its journal, one actor
at a time: four round trips per actor, about 2 ms each on a busy pair of cores, so a thousand
actors took seconds. ``take_up_op`` does it in one transaction of four statements: the claim
(each actor's epoch raised, as ``claim_op`` does, with the same conditions), and, for the
actors it claimed, their mailboxes, the journal of each mailbox's head, and the state of what
each suspended head waits on. Each activation then starts from its ``TakenUp`` with no read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ._actors import ACTOR_COLUMNS, PENDING_RESTART, ActorRecord, actor_from_row
from ._ops import Op, Rows
from ._promises import COLUMNS, promise_from_row
from ._reads import JournalLoad, MailboxEntry
from ._records import Promise

__all__ = ["MAILBOX_LIMIT", "TakenUp", "take_up_op", "taken_up"]

MAILBOX_LIMIT = 1000
"""Pending messages read per actor (an activation reads the rest when it gets to them)."""


class TakenUp(msgspec.Struct, frozen=True):
    """An actor claimed by a take-up, with what its activation would read first."""

    record: ActorRecord
    """Its row, at the epoch the claim gave it."""
    mailbox: list[MailboxEntry]
    """Its mailbox, oldest first (as ``Store.mailbox`` reads it)."""
    whole: bool
    """Whether ``mailbox`` is all of it (else the activation reads it again when it drains)."""
    journals: dict[str, JournalLoad]
    """The journal of its mailbox's head message."""
    awaited: dict[str, Promise]
    """The promises its head message waits on, if it is suspended, as they stood."""

    @classmethod
    def unread(cls, record: ActorRecord) -> TakenUp:
        """``record`` alone, nothing read with it: its activation reads its mailbox.

        Example:
            >>> TakenUp.unread(record).whole  # doctest: +SKIP
            False

        """
        return cls(record, [], False, {}, {})


_CLAIM = f"""
UPDATE actors SET epoch = epoch + 1, node = %(node)s, updated_at = clock_timestamp()
WHERE id = ANY(%(ids)s) AND status = 'running' AND (node IS NULL OR node = %(node)s)
  AND NOT {PENDING_RESTART.format(actor="actors")}
RETURNING {ACTOR_COLUMNS}
"""
# The statements after the claim see its rows (one transaction); those of actors it did not
# claim are dropped by ``finish``.
_MAILBOXES = f"""
SELECT {COLUMNS}, awaiting, wait_all FROM (
    SELECT p.*, p.xmin, row_number() OVER (PARTITION BY p.recipient ORDER BY p.seq) AS n
    FROM promises p
    WHERE p.recipient = ANY(%(ids)s) AND (p.state = 'pending' OR p.awaiting IS NOT NULL)
) promises
WHERE n <= %(limit)s OR state <> 'pending'
ORDER BY seq
"""
_HEADS = """
WITH heads AS (
    SELECT DISTINCT ON (recipient) id FROM promises
    WHERE recipient = ANY(%(ids)s) AND (state = 'pending' OR awaiting IS NOT NULL)
    ORDER BY recipient, seq
)
"""
_STEPS = f"""{_HEADS}
SELECT h.id, steps.* FROM heads h CROSS JOIN LATERAL (
    SELECT {COLUMNS} FROM promises
    WHERE id >= h.id || '/' AND id < h.id || '0' AND strpos(substr(id, length(h.id) + 2), '/') = 0
) steps
"""
_AWAITED = f"""{_HEADS}
SELECT {COLUMNS} FROM promises WHERE id IN (
    SELECT unnest(p.awaiting) FROM heads h JOIN promises p ON p.id = h.id
    WHERE p.state = 'pending' AND p.awaiting IS NOT NULL
)
"""
_AWAITING = len(COLUMNS.split(","))


def taken_up(
    record: ActorRecord,
    mailbox: list[MailboxEntry],
    journal: JournalLoad | None,
    awaited: dict[str, Promise] | None = None,
) -> TakenUp:
    """An actor's ``TakenUp``: its row as a claim or a revive left it, its mailbox as read in
    the same transaction (oldest first, at most ``MAILBOX_LIMIT`` pending messages: whole when
    fewer), its head message's ``journal`` and what that head waits on.
    """
    pending = sum(1 for e in mailbox if not e.promise.state.settled)
    journals = {journal.records[0].id: journal} if journal is not None else {}
    return TakenUp(record, mailbox, pending < MAILBOX_LIMIT, journals, awaited or {})


def take_up_op(actor_ids: Sequence[str], node: str) -> Op:
    """The op that claims ``actor_ids`` for ``node`` and reads what their activations need.

    Its result maps each actor it claimed to its ``TakenUp``; an actor that is not alive,
    that another node holds, or whose supervisor has decided to restart it and not done so
    yet is left out (as ``claim_op`` returns ``None`` for it). Run again after a commit whose
    answer was lost, it claims them again (a newer epoch nobody has used) and reads again.
    """
    params = {"ids": list(actor_ids), "node": node, "limit": MAILBOX_LIMIT}

    def finish(rows: list[Rows], xid: int | None) -> dict[str, TakenUp]:
        claimed, mailbox_rows, step_rows, awaited_rows = rows
        records = {r[0]: actor_from_row(r) for r in claimed}
        mailboxes: dict[str, list[MailboxEntry]] = {a: [] for a in records}
        for r in mailbox_rows:
            promise = promise_from_row(r)
            if promise.recipient in mailboxes:
                awaiting = list(r[_AWAITING]) if r[_AWAITING] is not None else None
                mailboxes[promise.recipient].append(
                    MailboxEntry(promise, awaiting, bool(r[_AWAITING + 1]))
                )
        steps: dict[str, list[Any]] = {}
        for r in step_rows:
            steps.setdefault(r[0], []).append(promise_from_row(r[1:]))
        states = {r[0]: promise_from_row(r) for r in awaited_rows}
        taken: dict[str, TakenUp] = {}
        for actor_id, record in records.items():
            mailbox = mailboxes[actor_id]
            journal: JournalLoad | None = None
            awaited: dict[str, Promise] = {}
            if mailbox:
                head = mailbox[0]
                marked = head.promise.state.settled and head.awaiting is not None
                journal = JournalLoad([head.promise, *steps.get(head.promise.id, [])], marked, [])
                for awaited_id in head.awaiting or ():
                    if awaited_id in states:
                        awaited[awaited_id] = states[awaited_id]
            taken[actor_id] = taken_up(record, mailbox, journal, awaited)
        return taken

    return Op(
        [(_CLAIM, params), (_MAILBOXES, params), (_STEPS, params), (_AWAITED, params)],
        finish,
        label="claim",
    )
