"""Chaos: three node processes under steady load (actors, a supervision tree, agent runs with
sub-agents), one SIGKILLed at random 30 times and started again. Nothing is lost, no kept step
runs again, the results are a crash-free run's, and no actor ever runs on two nodes at once
(issue 16)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promissory.agents import RunHandle
from promissory.runtime import Runtime
from promissory.testing import kept_steps
from tests.fleet.app import Crew, Job, X, Y, lead
from tests.fleet.kit import Node, SideLog, stuck_report

ALL = ["X", "Y", "Z", "Crew", "lead", "helper"]


def effect_lines(side_log: Path) -> list[list[str]]:
    path = side_log.with_suffix(".effects")
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines()]


@pytest.mark.timeout(600)
def test_thirty_kills_under_load_lose_nothing_and_run_nothing_twice(
    dsn: str, nodes: Callable[..., Node], side_log: Path
) -> None:
    everyone: list[Node] = []

    def node(name: str) -> Node:
        everyone.append(nodes(ALL, name, FLEET_LOG_LEVEL="INFO"))
        return everyone[-1].ready()

    fleet = [node(f"n{i}") for i in range(3)]
    rng = random.Random(16)
    deaths: dict[str, float] = {}
    kept_at: list[tuple[int, set[str]]] = []
    expected: dict[str, int] = {}
    replies: list[tuple[str, int, Any]] = []
    runs: list[RunHandle] = []
    stop = threading.Event()
    with Runtime(dsn, hosts=[]) as rt:
        actors = [rt.spawn(X, id=f"x{i}") for i in range(4)]
        actors += [rt.spawn(Y, id=f"y{i}") for i in range(4)]
        rt.spawn(Crew, id="crew")
        actors += [rt.ref("crew/a"), rt.ref("crew/b")]
        time.sleep(1.0)  # the crew starts its children somewhere

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                ref = actors[n % len(actors)]
                replies.append((ref.id, n, ref.ask(Job(n, work=0.01), id=f"{ref.id}/job-{n}")))
                expected[ref.id] = expected.get(ref.id, 0) + n
                if n % 10 == 0:
                    runs.append(rt.start(lead, f"task {n}", id=f"runs/chaos-{n}"))
                time.sleep(0.02)

        driver = threading.Thread(target=load)
        driver.start()
        try:
            for kill in range(30):
                time.sleep(rng.uniform(0.3, 1.2))
                i = rng.randrange(3)
                victim = fleet[i]
                deaths[victim.node_id] = victim.kill()
                # Kept steps first, then where the log is: a step kept by then was started
                # before that point (its start is logged before it runs).
                kept = kept_steps(dsn)
                kept_at.append((len(effect_lines(side_log)), kept))
                time.sleep(rng.uniform(0.0, 0.5))
                fleet[i] = node(f"n{i}-{kill}")
        finally:
            stop.set()
            driver.join()
        # Nothing lost: every message answered, every run finished, as without the kills.
        totals: dict[str, int] = {}
        for actor_id, _n, reply in replies:
            try:
                answer = reply.get(timeout=60)
            except TimeoutError:
                raise AssertionError(stuck_report(dsn, reply.id, everyone, side_log)) from None
            totals[actor_id] = max(totals.get(actor_id, 0), answer)
        assert totals == expected
        assert [h.result(timeout=60) for h in runs] == ["done"] * len(runs)
    # No kept step started again after a kill.
    lines = effect_lines(side_log)
    for position, kept in kept_at:
        again = {f[2] for f in lines[position:] if f[0] == "step"} & kept
        assert not again, f"kept steps ran again: {sorted(again)[:5]}"
    # Each step's effect at most once per start, and the tools' effects once per key.
    log = SideLog.read(side_log)
    assert log.overlaps(deaths) == [], "an actor ran on two nodes at once"
    assert len(log.runs) >= len(replies)
