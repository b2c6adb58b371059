"""The recovery pass: pick up every actor this node should run, on start and on adoption.

One query reads the running actors this node holds or no node holds (in start order), one the
head of their mailboxes with what suspended ones wait on; of those, the node takes the ones
whose type it hosts and that are its own (it holds them, or the placement picks it among the
live nodes that host the type). Runnable ones are activated, many at once: one statement
claims them and the same transaction reads their mailboxes and the journals of their first
messages (``NodeHost.take_up``), suspended ones registered to wake when what they
wait on settles, and actors waiting out a restart backoff armed. The same pass runs at start,
when a dead node's actors are handed back, after the LISTEN connection came back, and now and
then as a safety net: it is idempotent, and running it on two nodes at once is safe (an
activation first claims its actor, and only one claim wins). An actor no live node hosts is
left exactly as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from ..actors import wait_is_over
from ..store import Store
from ._host import NodeHost

log = logging.getLogger("promissory.runtime")

Mine = Callable[[str, str, "str | None"], bool]
"""Whether this node should run an actor: ``mine(actor_id, kind, holder)``."""


class RecoveryReport(msgspec.Struct, frozen=True):
    """What a recovery pass found."""

    adopted_nodes: list[str]
    actors: int
    activated: int
    suspended: int
    waiting: int = 0
    """Actors left as they are because no live node hosts their type."""


def _each(actor_id: str, fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)`` for one actor: whatever it raises is that actor's, never the pass's."""
    try:
        fn(*args)
    except Exception:
        log.exception("recovery could not resume actor %s; the others go on", actor_id)


PROGRESS_EVERY = 1000
"""A recovery of more actors than this says how far it has got, every this many actors."""


def recover(
    store: Store, host: NodeHost, mine: Mine, adopted: list[str] | None = None
) -> RecoveryReport:
    """Run the recovery pass for ``host``'s node; ``mine`` says which actors are its own."""
    began = time.monotonic()
    me = host.node_id
    candidates = store.live_actors(me)
    kinds: dict[str, str] = {}
    waiting = 0
    for actor_id, kind, holder in candidates:
        if mine(actor_id, kind, holder):
            kinds[actor_id] = kind
        elif not host.can_host(kind) and holder is None:
            waiting += 1
    heads = [h for h in store.mailbox_heads(me) if h.actor in kinds]
    # What the suspended ones wait on, in one read: those whose wait is over run at once.
    awaited = sorted({i for h in heads if h.awaiting for i in h.awaiting})
    states = {i: p.state for i, p in store.get_many(awaited).items()} if awaited else {}
    ready = {h.actor for h in heads if h.awaiting and wait_is_over(h.awaiting, states, h.wait_all)}
    activated = suspended = 0
    for actor_id, kind in kinds.items():
        host.note_kind(actor_id, kind)
    for head in heads:
        if head.awaiting and head.actor not in ready:
            host.register_suspended(
                head.actor, kinds[head.actor], head.message, head.awaiting, head.wait_all
            )
            suspended += 1
        else:
            activated += 1
    # Activate in start order, so a tree comes back parents first.
    runnable = {h.actor for h in heads if not h.awaiting} | ready
    # Actors whose last handler ended them, by a process that died before handling that.
    runnable.update(a for a, kind, holder in store.stopping_actors(me) if mine(a, kind, holder))
    if len(runnable) > PROGRESS_EVERY:
        log.info("recovery: taking up %d actors with work (%d waiting)", len(runnable), suspended)
    ordered = [actor_id for actor_id in kinds if actor_id in runnable]
    for start in range(0, len(ordered), PROGRESS_EVERY):
        part = ordered[start : start + PROGRESS_EVERY]
        try:
            host.take_up(part)  # a claim and a read for many at once
        except Exception:
            log.exception("recovery could not take %d actors up at once; one by one", len(part))
            for actor_id in part:
                _each(actor_id, host.deliver, actor_id, None)
        done = start + len(part)
        if done < len(ordered):
            log.info("recovery: %d of %d actors taken up", done, len(ordered))
    # Actors waiting out a restart backoff: restart them when it ends (at once if it has).
    for record in store.restarting_actors(me):
        if mine(record.id, record.kind, record.node):
            _each(record.id, host.restarted, record)
    # Suspended actors whose promise settled since the read above: wake them now.
    for head in heads:
        if head.awaiting and head.actor not in ready:
            host.wake_soon(head.actor)
    report = RecoveryReport(adopted or [], len(kinds), activated, suspended, waiting)
    took = time.monotonic() - began
    if kinds or adopted or waiting:
        log.info(
            "recovery: %d live actors here, %d with work resumed, %d waiting on promises%s%s "
            "(%.2f s)",
            len(kinds),
            activated,
            suspended,
            f"; {waiting} waiting for a node that hosts their type" if waiting else "",
            f"; adopted the actors of {len(adopted)} dead node(s)" if adopted else "",
            took,
            extra={"promissory": {"event": "recovery", **msgspec.structs.asdict(report)}},
        )
    return report
