"""What a dead node held is adopted whole: a handler asleep on a durable timer, an actor waiting
out a restart backoff, a tree whose cancel was kept but not carried out (issue 16)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from promissory.actors import Backoff, ChildSpec, Restart
from promissory.runtime import Runtime
from tests.actors.kit import sql
from tests.fleet.app import Crash, CrashOnce, Job, Nap, Napper, X
from tests.fleet.kit import Node
from tests.kit import eventually

TYPES = ["X", "Napper", "CrashOnce"]


@pytest.mark.timeout(120)
def test_a_dead_nodes_timers_backoffs_and_cancels_are_carried_on_by_a_live_node(
    dsn: str, nodes: Callable[..., Node]
) -> None:
    a = nodes(TYPES, "A").ready()
    with Runtime(dsn, hosts=[]) as rt:
        assert rt.store is not None
        # 8 s: long enough that A, busy setting up the other two, cannot finish them itself
        # before it is paused below.
        napper = rt.spawn(Napper, id="napper")
        nap = napper.ask(Nap(8.0))
        backoff = ChildSpec(
            restart=Restart.PERMANENT, intensity=5, backoff=Backoff(min=8.0, max=8.0, jitter=0)
        )
        crasher = rt.spawn(CrashOnce, id="crasher", spec=backoff)
        crashed = crasher.ask(Crash())
        doomed = rt.spawn(X, id="doomed")
        assert doomed.ask(Job(1)).get(timeout=20) == 1
        # A holds all three: one asleep, one in its backoff.
        eventually(
            lambda: sql(
                dsn, "SELECT 1 FROM promises WHERE id = %s AND awaiting IS NOT NULL", nap.id
            ),
            what="the nap suspended",
        )
        eventually(
            lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'crasher'") == [("restarting",)],
            what="the crasher in its backoff",
        )
        assert {r[0] for r in sql(dsn, "SELECT node FROM actors")} == {a.node_id}
        # Frozen now, so that however long B takes to start, A cannot wake the nap or end the
        # backoff itself; it holds its lease (or loses it to silence) until it is killed.
        a.pause()
        b = nodes(TYPES, "B").ready()
        a.kill()
        # A cancel kept while nobody carries it out (its holder is dead).
        rt.store.cancel_actor("doomed", "no longer needed")
        assert nap.get(timeout=20) == f"woke on {b.node_id}"
        assert crashed.get(timeout=20) == f"restarted on {b.node_id}"
        eventually(
            lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'doomed'") == [("stopped",)],
            what="the canceled actor ended",
            timeout=20,
        )
        assert sql(dsn, "SELECT restarts FROM actors WHERE id = 'crasher'") == [(1,)]
        time.sleep(0.2)
