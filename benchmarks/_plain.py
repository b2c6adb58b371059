"""The ceilings: plain psycopg on the same table (durable, nothing else), and plain pykka (the
same message pattern in memory, nothing durable). Each trial returns the same dict as
``_promissory``'s trials.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pykka
from _common import PG_INSERT, PG_UPDATE, pg_batch, proc_status

# -- the database ceiling ------------------------------------------------------------------------


def pg_w1(dsn: str, n: int, per_commit: int, warmup: int, runs: int) -> dict[str, Any]:
    """A run of ``n`` steps as plain SQL: each step inserts a row and settles it.

    ``per_commit`` 1 is one transaction per step (``BEGIN; INSERT; UPDATE; COMMIT`` in one
    pipelined round trip): the ceiling for one commit per step. ``per_commit`` = ``n`` is the
    whole run in one transaction (the batched ceiling).
    """
    t0 = time.monotonic()
    conn = psycopg.connect(dsn, autocommit=True)
    cur = conn.cursor()
    seq = [0]
    samples = []
    try:
        with conn.pipeline() as pipeline:

            def one_run() -> None:
                for start in range(0, n, per_commit):
                    k = min(per_commit, n - start)
                    ids = [(f"pg/{seq[0] + j}",) for j in range(k)]
                    seq[0] += k
                    pg_batch(cur, pipeline, ids)

            for _ in range(warmup):
                one_run()
            for _ in range(runs):
                t = time.perf_counter()
                one_run()
                samples.append(time.perf_counter() - t)
    finally:
        conn.close()
    total = warmup + runs
    return {
        "samples": samples,
        "units": n,
        "steps_total": n * total,
        "hold": time.monotonic() - t0,
    }


def pg_w6(dsn: str, samples: int, pause: float = 0.01) -> dict[str, Any]:
    """One step committed alone (pg-1's round trip: ``BEGIN; INSERT; UPDATE; COMMIT``
    pipelined) ``pause`` seconds after the last, as W6's tells come: the database's floor
    for a lone durable write after a quiet spell, which W6's idle aim is pg-1's commit plus
    hand-offs over. On this VM a round trip after 10 ms of quiet is slower than one right
    after another (BENCHMARKS.md, "The message path", tenth pass).
    """
    t0 = time.monotonic()
    conn = psycopg.connect(dsn, autocommit=True)
    cur = conn.cursor()
    lat = []
    try:
        with conn.pipeline() as pipeline:
            for k in range(samples + 5):
                time.sleep(pause)
                t = time.monotonic()
                pg_batch(cur, pipeline, [(f"pg6/{k}",)])
                if k >= 5:
                    lat.append(time.monotonic() - t)
    finally:
        conn.close()
    return {"samples": lat, "units": 1, "steps_total": samples + 5, "hold": time.monotonic() - t0}


def pg_w5_messages(dsn: str, messages: int, senders: int) -> dict[str, Any]:
    """W5's messages as plain SQL from the same number of sender threads, each on its own
    connection: a message is a row inserted (one commit) and then settled (a second), as a
    promissory message is kept and then settled. What the database and psycopg do for W5's
    pattern with no runtime around them.
    """
    t0 = time.monotonic()
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(senders)]
    start = threading.Barrier(senders + 1)

    def send(k: int) -> None:
        cur = conns[k].cursor()
        start.wait()
        for i in range(k, messages, senders):
            cur.execute(PG_INSERT, (f"pg5/{i}",), prepare=True)
            cur.execute(PG_UPDATE, (f"pg5/{i}",), prepare=True)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(senders)]
    for th in threads:
        th.start()
    start.wait()
    began = time.perf_counter()
    for th in threads:
        th.join()
    took = time.perf_counter() - began
    for c in conns:
        c.close()
    return {
        "samples": [took],
        "units": messages,
        "steps_total": messages,
        "hold": time.monotonic() - t0,
    }


def pg_w1_row(dsn: str, n: int) -> dict[str, Any]:
    """Autocommit ``INSERT`` then ``UPDATE`` (two commits per step, two round trips), as
    ``store_throughput.py``'s pg-1; kept for reference in the JSON only."""
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        t = time.perf_counter()
        for i in range(n):
            conn.execute(PG_INSERT, (f"pgrow/{i}",))
            conn.execute(PG_UPDATE, (f"pgrow/{i}",))
        return {"samples": [time.perf_counter() - t], "units": n, "steps_total": n}
    finally:
        conn.close()


# -- plain pykka --------------------------------------------------------------------------------


def noop(i: int) -> int:
    return i


class Stepper(pykka.ThreadingActor):
    """On a message ``n``, calls a no-op function ``n`` times (the steps, not kept)."""

    def on_receive(self, message: Any) -> Any:
        for i in range(message):
            noop(i)
        return message


class Prober(pykka.ThreadingActor):
    def __init__(self, marks: dict[int, float]) -> None:
        super().__init__()
        self.marks = marks

    def on_receive(self, message: Any) -> Any:
        self.marks[message] = time.monotonic()
        return message


class Parent(pykka.ThreadingActor):
    """Asks ``width`` child actors and gathers their replies (W5's shape, nothing failing)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.children = [Stepper.start() for _ in range(width)]

    def on_receive(self, message: Any) -> Any:
        futures = [c.ask(1, block=False) for c in self.children]
        return pykka.get_all(futures)

    def on_stop(self) -> None:
        for c in self.children:
            c.stop()


def pykka_w1(n: int, warmup: int, runs: int) -> dict[str, Any]:
    ref = Stepper.start()
    try:
        for _ in range(warmup):
            ref.ask(n)
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            ref.ask(n)
            samples.append(time.perf_counter() - t)
    finally:
        ref.stop()
    return {"samples": samples, "units": n, "steps_total": 0}


def pykka_w2(actors: int, steps: int, warmup: int, batches: int) -> dict[str, Any]:
    """``actors`` pykka actors already started (as the durable actors are already spawned);
    each gets one message that makes ``steps`` no-op calls; all are sent, then all replies
    awaited."""
    refs = [Stepper.start() for _ in range(actors)]
    try:

        def batch() -> float:
            t = time.perf_counter()
            futures = [r.ask(steps, block=False) for r in refs]
            pykka.get_all(futures, timeout=120)
            return time.perf_counter() - t

        for _ in range(warmup):
            batch()
        samples = [batch() for _ in range(batches)]
    finally:
        for r in refs:
            r.stop()
    return {"samples": samples, "units": actors * steps, "steps_total": 0}


def pykka_w5(width: int, warmup: int, runs: int) -> dict[str, Any]:
    samples = []
    for k in range(warmup + runs):
        t = time.perf_counter()
        ref = Parent.start(width)
        ref.ask("go", timeout=60)
        took = time.perf_counter() - t
        ref.stop()
        if k >= warmup:
            samples.append(took)
    return {"samples": samples, "units": width, "steps_total": 0}


def pykka_w6(fresh: bool, samples: int) -> dict[str, Any]:
    """``tell`` to ``on_receive`` latency: to a running actor, or (``fresh``) to an actor
    started for the message (pykka's nearest thing to activating a passivated actor)."""
    marks: dict[int, float] = {}
    ref = Prober.start(marks)
    lat = []
    for k in range(samples + 5):
        time.sleep(0.01)
        t = time.monotonic()
        if fresh:
            ref.stop()
            ref = Prober.start(marks)
        ref.tell(k)
        while k not in marks:
            time.sleep(0.0002)
        if k >= 5:
            lat.append(marks[k] - t)
    ref.stop()
    return {"samples": lat, "units": 1, "steps_total": 0}


class Napper(pykka.ThreadingActor):
    """A pykka actor that waits out a nap in its handler, as plain code waits on a timer: its
    thread is held for as long as it waits."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.wake = wake

    def on_receive(self, seconds: float) -> None:
        self.wake.wait(seconds)


def pykka_w4(waiters: int, seconds: float) -> dict[str, Any]:
    """``waiters`` pykka actors, each waiting in its handler: resident memory and threads once
    they all wait (the non-durable way to park: a thread each)."""
    wake = threading.Event()
    warm = [Napper.start(wake) for _ in range(max(20, waiters // 20))]
    for ref in warm:
        ref.tell(seconds)
    time.sleep(0.3)
    base = proc_status()
    refs = [Napper.start(wake) for _ in range(waiters)]
    for ref in refs:
        ref.tell(seconds)
    time.sleep(0.5)  # every handler is in its wait
    after = proc_status()
    wake.set()
    for ref in warm + refs:
        ref.stop()
    return {
        "samples": [(after["rss"] - base["rss"]) / waiters],
        "units": waiters,
        "steps_total": 0,
        "rss_base": base["rss"],
        "rss_after": after["rss"],
        "threads_base": base["threads"],
        "threads_after": after["threads"],
    }
