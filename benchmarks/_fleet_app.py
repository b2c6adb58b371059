"""Actors and a node process for the fleet benchmarks (``fleet.py``).

``python benchmarks/_fleet_app.py DSN MARKS`` runs a node hosting these types until SIGTERM or
SIGKILL; every handler appends ``<key>\\t<time.time()>`` to the MARKS file when it starts, so
the benchmark, on the same machine's clock, can tell when a message reached its handler.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import msgspec

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from promissory import Context, DurableActor, handler  # noqa: E402
from promissory.runtime import Runtime  # noqa: E402

MARKS = os.environ.get("FLEET_MARKS", "")


def mark(key: str) -> None:
    if not MARKS:
        return
    fd = os.open(MARKS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key}\t{time.time():.6f}\n".encode())
    finally:
        os.close(fd)


class Gate(msgspec.Struct):
    gate: str


class Probe(msgspec.Struct):
    k: int


class Steps(msgspec.Struct):
    n: int


def _noop() -> None:
    return None


class Waiter(DurableActor[None], name="bench.fleet.Waiter"):
    """Waits on a gate promise; marks when it runs again after the gate opened."""

    @handler
    def wait(self, ctx: Context, msg: Gate) -> str:
        ctx.promise(id=msg.gate).result()
        mark(f"ran/{ctx.actor_id}")
        return "done"


class Prober(DurableActor[None], name="bench.fleet.Prober"):
    @handler
    def probe(self, ctx: Context, msg: Probe) -> int:
        mark(f"probe/{msg.k}")
        return msg.k


class Stepper(DurableActor[None], name="bench.fleet.Stepper"):
    @handler
    def steps(self, ctx: Context, msg: Steps) -> int:
        for _ in range(msg.n):
            ctx.step(_noop, name="noop")
        return msg.n


def main(dsn: str) -> int:
    if os.environ.get("FLEET_DEBUG"):
        import logging

        logging.basicConfig(level=logging.INFO, format="%(created).3f %(name)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    rt = Runtime(dsn, hosts=[Waiter, Prober, Stepper]).open()
    print(f"READY {rt.node_id}", flush=True)
    done.wait()
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
