"""The recovery pass: on start, before new work, pick up every actor that has work.

One query reads the live actors this node may host (in start order), one reads their pending
messages with what suspended ones wait on; then actors with runnable work are activated (each
activation loads its mailbox and journals in batched queries) and suspended ones are registered
to wake when what they wait on settles. Running it twice at once, on two nodes, is safe: an
activation first claims its actor, and only one claim wins.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from ..store import Store
from ..store._actors import ACTOR_COLUMNS, actor_from_row
from ..store._nodes import adopt_dead_nodes
from ._host import NodeHost

log = logging.getLogger("promissory.runtime")


class RecoveryReport(msgspec.Struct, frozen=True):
    """What a recovery pass found."""

    adopted_nodes: list[str]
    actors: int
    activated: int
    suspended: int


_LIVE = (
    "SELECT id, kind FROM actors WHERE status = 'running' AND (node IS NULL OR node = %s) "
    "ORDER BY seq"
)
_STOPPING = "SELECT id FROM actors WHERE status = 'running' AND reason ? 'stopping'"
_RESTARTING = (
    f"SELECT {ACTOR_COLUMNS} FROM actors WHERE status = 'restarting' AND restart_at IS NOT NULL"
)
_PENDING = """
SELECT DISTINCT ON (p.recipient) p.recipient, p.id,
       CASE WHEN p.state = 'pending' THEN p.awaiting END
FROM promises p JOIN actors a ON a.id = p.recipient
WHERE p.recipient IS NOT NULL
  AND (p.state = 'pending' OR (p.state <> 'pending' AND p.awaiting IS NOT NULL))
  AND a.status = 'running' AND (a.node IS NULL OR a.node = %s)
ORDER BY p.recipient, p.seq
"""
"""The head of each mailbox: a pending message (with what it waits on, if suspended), or a
canceled one still marked for its cleanup replay."""


def recover(store: Store, host: NodeHost) -> RecoveryReport:
    """Run the recovery pass for ``host``'s node."""
    adopted = adopt_dead_nodes(store, host.node_id)

    def read(conn: Any) -> tuple[list[Any], list[Any]]:
        return (
            conn.execute(_LIVE, (host.node_id,)).fetchall(),
            conn.execute(_PENDING, (host.node_id,)).fetchall(),
        )

    actors, heads = store.read(read)
    kinds = {row[0]: row[1] for row in actors}
    activated = suspended = 0
    for actor_id, kind in kinds.items():
        host.note_kind(actor_id, kind)
    for recipient, message_id, awaiting in heads:
        kind = kinds.get(recipient)
        if kind is None:
            continue
        if awaiting:
            host.register_suspended(recipient, kind, message_id, list(awaiting))
            suspended += 1
        else:
            activated += 1
    # Activate in start order, so a tree comes back parents first.
    runnable = {r for r, _, a in heads if not a}
    # Actors whose last handler ended them, by a process that died before handling that.
    runnable.update(r[0] for r in store.read(lambda conn: conn.execute(_STOPPING).fetchall()))
    for actor_id in kinds:
        if actor_id in runnable:
            host.deliver(actor_id, None)
    # Actors waiting out a restart backoff: restart them when it ends (at once if it has).
    for record in store.read(lambda conn: conn.execute(_RESTARTING).fetchall()):
        host.restarted(actor_from_row(record))
    # Suspended actors whose promise settled while nothing ran: wake them now.
    for recipient, _, awaiting in heads:
        if awaiting and recipient in kinds:
            host.wake_soon(recipient)
    report = RecoveryReport(adopted, len(kinds), activated, suspended)
    log.info("promissory recovery: %s", report)
    return report
