"""A fleet of unlike nodes on one Postgres: each node runs only the types it hosts; a dead
node's actors go to live nodes that host their type, within seconds, and the others wait,
untouched, until a node that hosts them comes (issue 16)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from promissory.runtime import Runtime
from promissory.store import node_listing
from tests.actors.kit import sql
from tests.fleet.app import Job, X, Y, Z
from tests.fleet.kit import Node, SideLog


def holder(dsn: str, actor: str) -> str | None:
    rows = sql(dsn, "SELECT node FROM actors WHERE id = %s", actor)
    return rows[0][0] if rows else None


@pytest.mark.timeout(120)
def test_a_dead_nodes_actors_move_to_nodes_that_host_their_type_and_the_rest_wait(
    dsn: str, nodes: Callable[..., Node], side_log: Path
) -> None:
    a = nodes(["X", "Y"], "A").ready()
    b = nodes(["Y", "Z"], "B").ready()
    # This process hosts nothing: it only makes actors and sends to them.
    with Runtime(dsn, hosts=[]) as rt:
        counts = {X: 4, Y: 12, Z: 4}  # 12 Y actors: all on one node by chance is 1 in 2048
        refs = {
            f"{cls.__name__.lower()}{i}": rt.spawn(cls, id=f"{cls.__name__.lower()}{i}")
            for cls, count in counts.items()
            for i in range(count)
        }
        for ref in refs.values():
            assert ref.ask(Job(1)).get(timeout=20) == 1
        log = SideLog.read(side_log)
        for ref in refs.values():
            kind = ref.id[0]
            node = log.nodes_of(ref.id)[0]
            assert (
                node
                in {"X": [a.node_id], "Y": [a.node_id, b.node_id], "Z": [b.node_id]}[kind.upper()]
            ), (ref.id, node)
        # The Y actors are spread over both nodes (placement), not all on the first.
        y_nodes = {log.nodes_of(f"y{i}")[0] for i in range(12)}
        assert len(y_nodes) == 2, y_nodes

        on_a = [r for r in refs.values() if holder(dsn, r.id) == a.node_id]
        assert on_a
        killed_at = a.kill()
        # Work for every actor A held, sent while nobody runs them.
        replies = {r.id: r.ask(Job(10)) for r in on_a}
        for actor_id, reply in replies.items():
            if actor_id.startswith("y"):
                assert reply.get(timeout=15) == 11  # taken up by B
        # Adoption and handling, with two node processes and this one sharing the CPU: within
        # seconds, not a wait for a lease's silence or a rescan (the bound guards a hang).
        took = time.time() - killed_at
        assert took < 15, f"the dead node's Y actors waited {took:.1f} s"
        for actor_id in replies:
            if actor_id.startswith("x"):
                # No live node hosts X: left as it is, its message pending, its row untouched.
                assert not replies[actor_id].done()
                assert sql(dsn, "SELECT status, node FROM actors WHERE id = %s", actor_id) == [
                    ("running", None)
                ]
        listing = {n.id: n for n in node_listing(rt.store)} if rt.store else {}
        assert listing[a.node_id].live is False and listing[b.node_id].live is True
        assert listing[b.node_id].kinds == ["fleet.Y", "fleet.Z"]

        c = nodes(["X"], "C").ready()
        for actor_id, reply in replies.items():
            if actor_id.startswith("x"):
                assert reply.get(timeout=10) == 11
                assert holder(dsn, actor_id) == c.node_id
    # Nothing ran twice: each step's effect happened once.
    effects = side_log.with_suffix(".effects")
    lines = [line.split("\t") for line in effects.read_text().splitlines()]
    keys = [f[2] for f in lines if f[0] == "effect"]
    assert len(keys) == len(set(keys))
