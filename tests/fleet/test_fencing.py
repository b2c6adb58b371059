"""Never twice at once: a node that lost its lease while still running (paused by SIGSTOP
past its lease, or its lease session killed) keeps nothing for the actors another node
adopted meanwhile, and says so (issue 16)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from promissory.runtime import Runtime
from promissory.store import LEASE_SILENCE
from tests.actors.kit import sql
from tests.fleet.app import Job, X
from tests.fleet.kit import Node, SideLog
from tests.kit import eventually


def holder(dsn: str, actor: str) -> str | None:
    return sql(dsn, "SELECT node FROM actors WHERE id = %s", actor)[0][0]  # type: ignore[no-any-return]


def counted(side_log: Path, key_part: str) -> int:
    path = side_log.with_suffix(".effects")
    return sum(
        1
        for line in path.read_text().splitlines()
        if line.startswith("effect\t") and key_part in line
    )


@pytest.mark.timeout(120)
def test_a_paused_node_past_its_lease_keeps_nothing_for_an_adopted_actor(
    dsn: str, nodes: Callable[..., Node], side_log: Path
) -> None:
    a = nodes(["X"], "A").ready()
    with Runtime(dsn, hosts=[]) as rt:
        ref = rt.spawn(X, id="x")
        assert ref.ask(Job(1)).get(timeout=20) == 1
        assert holder(dsn, "x") == a.node_id
        b = nodes(["X"], "B").ready()
        # A handles a long job: its first step is kept, then it is paused mid-handler.
        reply = ref.ask(Job(5, work=3.0), id="x/long")
        eventually(lambda: counted(side_log, "x/long/1") == 1, what="the first step kept")
        a.pause()
        paused = time.monotonic()
        # Its lease session falls silent; B adopts x and handles the message again.
        assert reply.get(timeout=LEASE_SILENCE + 30) == 6
        assert time.monotonic() - paused > LEASE_SILENCE - 1
        assert holder(dsn, "x") == b.node_id
        a.resume()
        # A wakes up mid-handler: its next step is refused, and it says so (the handler and
        # its lease thread each, in either order).
        eventually(
            lambda: (
                any("fenced off" in line for line in a.err)
                and any("lost its lease" in line for line in a.err)
            ),
            timeout=15,
            what="A's log saying it was fenced off and lost its lease",
        )
        time.sleep(0.5)
        # Nothing of A's was kept after the adoption: the second step ran once (B's), the
        # state counts the job once, and the reply is B's.
        assert counted(side_log, "x/long/2") == 1
        assert sql(dsn, "SELECT state FROM actors WHERE id = 'x'") == [({"total": 6, "count": 2},)]
        log = SideLog.read(side_log)
        long_runs = [r for r in log.runs if r.message == "x/long"]
        assert [r.node for r in long_runs if r.ended is not None] == [b.node_id]
        # A rejoined as a new node and serves again.
        assert ref.ask(Job(1)).get(timeout=20) == 7


@pytest.mark.timeout(120)
def test_a_node_whose_lease_session_is_killed_fences_itself_and_rejoins(
    dsn: str, nodes: Callable[..., Node], side_log: Path
) -> None:
    a = nodes(["X"], "A").ready()
    with Runtime(dsn, hosts=[]) as rt:
        ref = rt.spawn(X, id="x")
        assert ref.ask(Job(1)).get(timeout=20) == 1
        killed = sql(
            dsn,
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN nodes n "
            "ON ((l.classid::bigint << 32) | l.objid::bigint) = n.lock_key "
            "WHERE l.locktype = 'advisory' AND n.id = %s",
            a.node_id,
        )
        assert killed == [(True,)]
        eventually(
            lambda: any("rejoined the fleet" in line for line in a.err),
            timeout=20,
            what="A rejoining",
        )
        # The same process, a new node: it takes its actor up again and answers.
        assert ref.ask(Job(2)).get(timeout=20) == 3
        assert holder(dsn, "x") not in (a.node_id, None)
