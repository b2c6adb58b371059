"""Rolling deploys: SIGTERM hands a node's actors over at once (no lease to wait out), each after
its current message; a rolling restart of three nodes under load loses nothing and runs
nothing twice (issue 16)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from promissory.runtime import Runtime
from promissory.store import LEASE_SILENCE
from tests.fleet.app import Job, X, Y
from tests.fleet.kit import Node, SideLog
from tests.kit import eventually

ALL = ["X", "Y", "Z", "Crew", "lead", "helper"]


@pytest.mark.timeout(300)
def test_a_rolling_restart_under_load_loses_nothing_and_runs_nothing_twice(
    dsn: str, nodes: Callable[..., Node], side_log: Path
) -> None:
    fleet = [nodes(ALL, f"n{i}").ready() for i in range(3)]
    sent: list[tuple[float, str, int, Any]] = []
    expected: dict[str, int] = {}
    stop = threading.Event()
    with Runtime(dsn, hosts=[]) as rt:
        actors = [rt.spawn(X, id=f"x{i}") for i in range(6)] + [
            rt.spawn(Y, id=f"y{i}") for i in range(6)
        ]

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                ref = actors[n % len(actors)]
                sent.append((time.monotonic(), ref.id, n, ref.ask(Job(n, work=0.02))))
                expected[ref.id] = expected.get(ref.id, 0) + n
                time.sleep(0.01)

        driver = threading.Thread(target=load)
        driver.start()
        try:
            for i in range(3):
                time.sleep(1.0)
                fleet[i].stop()  # SIGTERM: drains, hands its actors over
                # it printed CLOSED before it exited; the thread reading its stdout may lag
                eventually(lambda n=fleet[i]: "CLOSED" in n.out, what=f"n{i} closed cleanly")
                fleet[i] = nodes(ALL, f"n{i}-new").ready()
            time.sleep(1.0)
        finally:
            stop.set()
            driver.join()
        waits = []
        totals: dict[str, int] = {}
        for _, actor_id, _, reply in sent:
            totals[actor_id] = max(totals.get(actor_id, 0), reply.get(timeout=30))
            promise = reply.promise()
            assert promise.settled_at is not None
            waits.append((promise.settled_at - promise.created_at).total_seconds())
        assert totals == expected
    # Nothing ran twice: every step's effect happened once, and each message was handled to
    # its end by one activation.
    effects = side_log.with_suffix(".effects").read_text().splitlines()
    keys = [line.split("\t")[2] for line in effects if line.startswith("effect\t")]
    assert len(keys) == len(set(keys))
    log = SideLog.read(side_log)
    finished = [r.message for r in log.runs if r.ended is not None]
    assert len(finished) == len(set(finished))
    waits.sort()
    print(
        f"{len(sent)} messages over a rolling restart of 3 nodes: waited (kept to answered) "
        f"p50 {waits[len(waits) // 2] * 1000:.1f} ms, longest {waits[-1] * 1000:.0f} ms"
    )
    # A handover takes far less; a message left to a lease's expiry waits out the lease's
    # silence (6 s) and the adopting node's grace after it.
    assert waits[-1] < LEASE_SILENCE + 0.5, "a message waited for a lease to expire"
