"""The fleet benchmarks: adoption after a node dies, latency across nodes, throughput of 1-3 nodes.

Usage::

    .venv/bin/python benchmarks/fleet.py [--dsn DSN] [--repeat N] [--actors 1000]

W8   A node holding ``--actors`` actors, each with a message waiting on one gate promise, is
     SIGKILLed; the gate is opened; the time until the first and the last of those actors runs
     again on the surviving node (its handler's first line), from the kill. Beside it, what
     the peers do (reference/anchors.md, peers.md): Resonate's default task lease (a dead
     worker's task waits out ~60 s; measured there at about 56 s) and DBOS's open-source
     recovery (a dead executor's workflows wait until that executor restarts).
W9   Latency from ``tell`` in one process to the handler starting in another node process,
     p50 and p99, beside the same with the actor hosted in the sending process (W6 live).
W10  W2 (100 actors at once, 10 steps each) with 1, 2 and 3 node processes on the one server:
     steps per second and commits per step. On 2 cores this measures the cost of coordination,
     not growth.

Every trial runs on a fresh schema, its nodes in fresh processes; figures are medians over the
repetitions, with min-max.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import DEFAULT_DSN, counters, percentile, spread, with_search_path  # noqa: E402
from _fleet_app import Gate, Probe, Prober, Stepper, Steps, Waiter  # noqa: E402

from promissory.runtime import Runtime  # noqa: E402


@contextmanager
def schema(dsn: str) -> Iterator[str]:
    name = "fleet_" + uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield with_search_path(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


class Node:
    def __init__(self, dsn: str, marks: Path) -> None:
        env = {**os.environ, "FLEET_MARKS": str(marks)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_fleet_app.py"), dsn],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("READY "), line
        self.node_id = line.split()[1]

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        at = time.time()
        self.proc.wait()
        return at

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def read_marks(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        key, at = line.split("\t")
        out[key] = float(at)
    return out


def wait_for(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("not reached")
        time.sleep(0.01)


# -- W8 ------------------------------------------------------------------------------------------


def w8(dsn: str, actors: int, tmp: Path) -> dict[str, float]:
    with schema(dsn) as sdsn:
        marks = tmp / f"w8-{uuid.uuid4().hex[:6]}"
        a = Node(sdsn, marks)
        with Runtime(sdsn, hosts=[]) as rt:
            refs = [rt.spawn(Waiter, id=f"w8/{i}") for i in range(actors)]
            for ref in refs:
                ref.tell(Gate("w8/gate"))
            assert rt.store is not None

            def suspended() -> bool:
                rows = rt.store.read(  # type: ignore[union-attr]
                    lambda c: c.execute(
                        "SELECT count(*) FROM promises WHERE awaiting IS NOT NULL "
                        "AND state = 'pending'"
                    ).fetchone()
                )
                return bool(rows and rows[0] == actors)

            wait_for(suspended, 300)
            b = Node(sdsn, marks)  # the survivor, live before the kill
            time.sleep(1.0)
            killed = a.kill()
            rt.store.resolve("w8/gate", True)
            wait_for(lambda: len(read_marks(marks)) >= actors, 120)
            b.stop()
        times = sorted(read_marks(marks).values())
        return {"first": times[0] - killed, "last": times[actors - 1] - killed}


# -- W9 ------------------------------------------------------------------------------------------


def w9(dsn: str, samples: int, tmp: Path, remote: bool) -> list[float]:
    with schema(dsn) as sdsn:
        marks = tmp / f"w9-{uuid.uuid4().hex[:6]}"
        os.environ["FLEET_MARKS"] = str(marks)
        import _fleet_app

        _fleet_app.MARKS = str(marks)
        node = Node(sdsn, marks) if remote else None
        hosts: list[Any] = [] if remote else [Prober]
        lat = []
        with Runtime(sdsn, hosts=hosts) as rt:
            ref = rt.spawn(Prober, id="w9")
            ref.ask(Probe(-1)).get(timeout=30)
            for k in range(samples + 5):
                time.sleep(0.01)
                t = time.time()
                ref.tell(Probe(k))
                wait_for(lambda k=k: f"probe/{k}" in read_marks(marks), 10)
                if k >= 5:
                    lat.append(read_marks(marks)[f"probe/{k}"] - t)
        if node is not None:
            node.stop()
        _fleet_app.MARKS = ""
        return lat


# -- W10 -----------------------------------------------------------------------------------------


def w10(dsn: str, nodes: int, tmp: Path, actors: int = 100, steps: int = 10) -> dict[str, float]:
    with schema(dsn) as sdsn:
        marks = tmp / f"w10-{uuid.uuid4().hex[:6]}"
        fleet = [Node(sdsn, marks) for _ in range(nodes)]
        with Runtime(sdsn, hosts=[]) as rt:
            refs = [rt.spawn(Stepper, id=f"w10/{i}") for i in range(actors)]
            for r in refs:  # warm: every actor taken up by its node
                r.ask(Steps(1)).get(timeout=60)
            before = counters(sdsn)
            t = time.perf_counter()
            batches = 3
            for _ in range(batches):
                replies = [r.ask(Steps(steps)) for r in refs]
                for reply in replies:
                    reply.get(timeout=300)
            took = time.perf_counter() - t
            after = counters(sdsn)
        for n in fleet:
            n.stop()
        total = batches * actors * steps
        return {
            "steps_per_s": total / took,
            "commits_per_step": (after["commits"] - before["commits"]) / total,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--only", default="W8,W9,W10", help="workloads to run, e.g. W8")
    args = parser.parse_args()
    only = set(args.only.upper().split(","))
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fleet-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    if "W8" in only:
        report_w8(args.dsn, args.actors, args.repeat, tmp)
    if "W9" in only:
        report_w9(args.dsn, args.samples, args.repeat, tmp)
    if "W10" in only:
        report_w10(args.dsn, args.repeat, tmp)
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


def report_w8(dsn: str, actors: int, repeat: int, tmp: Path) -> None:
    w8s = [w8(dsn, actors, tmp) for _ in range(repeat)]
    print(f"W8 adoption of {actors} actors after SIGKILL of their node ({repeat} repetitions):")
    firsts, lasts = [r["first"] for r in w8s], [r["last"] for r in w8s]
    print(
        f"  first runs again after {statistics.median(firsts):.2f} s ({spread(firsts, '{:.2f}')})"
    )
    print(
        f"  last runs again after  {statistics.median(lasts):.2f} s "
        f"({spread(lasts, '{:.2f}')})  (aim: within 3 s)"
    )
    print(
        "  beside: Resonate's default lease, ~56 s (reference/anchors.md); DBOS open source, "
        "none until the same executor restarts"
    )


def report_w9(dsn: str, samples: int, repeat: int, tmp: Path) -> None:
    remote: list[float] = []
    local: list[float] = []
    for _ in range(repeat):
        local += w9(dsn, samples, tmp, remote=False)
        remote += w9(dsn, samples, tmp, remote=True)
    print(f"W9 tell -> handler start ({len(remote)} samples each):")
    print(
        f"  across nodes: p50 {percentile(remote, 50) * 1000:.2f} ms, "
        f"p99 {percentile(remote, 99) * 1000:.2f} ms  (aim: p50 under 5 ms)"
    )
    print(
        f"  in-process:   p50 {percentile(local, 50) * 1000:.2f} ms, "
        f"p99 {percentile(local, 99) * 1000:.2f} ms"
    )


def report_w10(dsn: str, repeat: int, tmp: Path) -> None:
    print(
        "W10 W2 (100 actors x 10 steps, 3 rounds) on 1, 2, 3 node processes "
        "(2 cores: the cost of coordination, not growth):"
    )
    for n in (1, 2, 3):
        rows = [w10(dsn, n, tmp) for _ in range(repeat)]
        rates = [r["steps_per_s"] for r in rows]
        print(
            f"  {n} node(s): {statistics.median(rates):,.0f} steps/s ({spread(rates)}), "
            f"{min(r['commits_per_step'] for r in rows):.2f} commits/step (least)"
        )


if __name__ == "__main__":
    sys.exit(main())
