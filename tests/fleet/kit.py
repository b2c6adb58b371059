"""Node processes for the fleet tests, and reading the side log the handlers write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.fleet.app import LOG_ENV, NODE_ENV
from tests.kit import ROOT


class Node:
    """One node process hosting some of ``tests.fleet.app``'s types."""

    def __init__(self, dsn: str, types: list[str], log: Path, name: str, **env: str) -> None:
        self.name = name
        self.types = types
        self.out: list[str] = []
        self.err: list[str] = []
        environ = {
            **os.environ,
            "PYTHONPATH": ROOT,
            LOG_ENV: str(log),
            NODE_ENV: name,
            "PROMISSORY_EFFECTS": str(log.with_suffix(".effects")),
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet.node", dsn, *types],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._ready = threading.Event()
        self.node_id = ""
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True).start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))
            if line.startswith("READY "):
                self.node_id = line.split()[1]
                self._ready.set()

    def ready(self, timeout: float = 30) -> Node:
        if not self._ready.wait(timeout):
            raise AssertionError(f"node {self.name} not ready:\n" + "\n".join(self.err[-30:]))
        return self

    def kill(self) -> float:
        """SIGKILL; returns when it died."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return time.time()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM: a clean close (its actors handed over at once)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Run:
    """One handler invocation, from the side log."""

    actor: str
    epoch: int
    message: str
    node: str
    began: float
    ended: float | None = None


@dataclass
class SideLog:
    runs: list[Run] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> SideLog:
        log = cls()
        open_runs: dict[tuple[str, int, str, str], Run] = {}
        if not path.exists():
            return log
        for line in path.read_text().splitlines():
            event, actor, epoch, message, node, at = line.split("\t")
            key = (actor, int(epoch), message, node)
            if event == "begin":
                run = Run(actor, int(epoch), message, node, float(at))
                open_runs[key] = run
                log.runs.append(run)
            elif key in open_runs:
                open_runs.pop(key).ended = float(at)
        return log

    def nodes_of(self, actor: str) -> list[str]:
        return [r.node for r in self.runs if r.actor == actor]

    def overlaps(self, deaths: dict[str, float]) -> list[tuple[Run, Run]]:
        """Pairs of runs of one actor on two nodes at once (a run cut off by its node's death
        ends at that death)."""
        by_actor: dict[str, list[Run]] = defaultdict(list)
        for r in self.runs:
            by_actor[r.actor].append(r)
        found = []
        for runs in by_actor.values():
            for i, a in enumerate(runs):
                for b in runs[i + 1 :]:
                    if a.node == b.node:
                        continue
                    a_end = a.ended or deaths.get(a.node, float("inf"))
                    b_end = b.ended or deaths.get(b.node, float("inf"))
                    if a.began < b_end and b.began < a_end:
                        found.append((a, b))
        return found


_NOTABLE = ("WARNING", "ERROR", "Traceback", "is gone", "rejoined")


def stuck_report(dsn: str, message_id: str, nodes: list[Node], side_log: Path) -> str:
    """What the store, the side log and the nodes say about a message nobody answered: the
    text a fleet test fails with, so a rare failure in CI can be read without a rerun.
    """
    lines = [f"message {message_id} was not answered"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state, recipient, seq, created_at, settled_at FROM promises WHERE id = %s",
            (message_id,),
        ).fetchone()
        lines.append(f"  its row: {row}")
        actor = row[1] if row else message_id.rsplit("/", 1)[0]
        lines.append(
            "  its actor: "
            + str(
                conn.execute(
                    "SELECT status, epoch, node, restarts, reason, updated_at FROM actors "
                    "WHERE id = %s",
                    (actor,),
                ).fetchone()
            )
        )
        for r in conn.execute(
            "SELECT id, state, seq, created_at, settled_at FROM promises WHERE recipient = %s "
            "AND (state = 'pending' OR seq > coalesce((SELECT seq FROM promises WHERE id = %s), 0)"
            " - 4) ORDER BY seq LIMIT 12",
            (actor, message_id),
        ):
            lines.append(f"  mailbox: {r}")
        for r in conn.execute("SELECT id, pid, started_at, ended_at FROM nodes ORDER BY 3"):
            lines.append(f"  node: {r}")
    if side_log.exists():
        lines += [f"  side log: {x}" for x in side_log.read_text().splitlines() if actor in x][-12:]
    for node in nodes:
        said = [x for x in node.err if any(k in x for k in (actor, *_NOTABLE))][-20:]
        state = "alive" if node.alive() else "dead"
        lines.append(f"  node process {node.name} ({node.node_id}, {state}):")
        lines += [f"    {x}" for x in said]
    return "\n".join(lines)
