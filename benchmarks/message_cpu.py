"""Where a message's CPU goes: W5's messages, by thread, with the thread switches they cost.

W5's supervisor of 1,000 children (``_promissory.Pool``) with every child kept live, sent
rounds of one message per child (``ask``) from persistent sender threads. For each round:
messages per second and the process's CPU per message. Over the rounds after the first two
(warm): each kind of thread's CPU per message (the kernel's own count, ``/proc/self/task/*/
schedstat``, exact where the clock tick's ``utime``/``stime`` miss a thousand threads' short
bursts) and its voluntary and involuntary thread switches per message.

In the suite (``run.py``) W5's messages are one timed round, and how many children are still
live then depends on how fast the touching went; here every round finds them all live, so
rounds compare, and the CPU per message is the figure that explains the rate: the process
runs Python one thread at a time (the GIL), so its rate is about the CPU it has over the CPU
each message costs.

    python benchmarks/message_cpu.py --dsn postgresql://postgres@127.0.0.1/postgres

The schema ``promissory_bench_cpu_<random>`` is made for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _promissory import ACTORS, SUPERVISED, Work, start_pool  # noqa: E402

from benchmarks._common import DEFAULT_DSN, with_search_path  # noqa: E402
from promissory import Runtime  # noqa: E402

SENDER = "bench-sender"
_FIGURES = ("cpu", "voluntary", "involuntary")


def kind_of(name: str) -> str:
    """The group a thread is counted in, from its Python name."""
    if name.startswith(SENDER):
        return "senders"
    if name.startswith("Worker-"):  # pykka names an actor's thread after its class
        return "the children (actors)"
    if name == "MainThread":
        return "main (gathers the replies)"
    if name in ("promissory-writer", "promissory-listener"):
        return name.removeprefix("promissory-")
    return "other"


def by_kind() -> collections.Counter[tuple[str, str]]:
    """CPU (µs) and switches of every live thread of this process, summed by kind."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: collections.Counter[tuple[str, str]] = collections.Counter()
    for task in glob.glob("/proc/self/task/*"):
        kind = kind_of(names.get(int(task.rsplit("/", 1)[1]), ""))
        try:
            with open(task + "/schedstat") as f:
                out[kind, "cpu"] += int(f.read().split()[0]) // 1000
            with open(task + "/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[kind, "voluntary"] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        out[kind, "involuntary"] += int(line.split()[1])
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
    return out


def measure(dsn: str, rounds: int, senders: int) -> dict[str, Any]:
    """Run the rounds; returns each round's rate and CPU per message, and the warm rounds'
    figures by kind of thread."""
    rt = Runtime(dsn, actors=ACTORS, idle_timeout=3600).open()
    try:
        assert rt.store is not None
        start_pool(rt)
        start = [threading.Barrier(senders + 1) for _ in range(rounds)]
        sent = [threading.Barrier(senders + 1) for _ in range(rounds + 1)]
        replies: dict[tuple[int, int], list[Any]] = {}

        def send(k: int) -> None:
            for r in range(rounds):
                start[r].wait()
                share = range(k, SUPERVISED, senders)
                replies[r, k] = [rt.ref(f"sup/c{i}").ask(Work(i)) for i in share]
                sent[r].wait()
            sent[rounds].wait()  # alive until counted

        threads = [
            threading.Thread(target=send, args=(k,), name=f"{SENDER}-{k}", daemon=True)
            for k in range(senders)
        ]
        for t in threads:
            t.start()
        rates, cpus = [], []
        before = after = collections.Counter[tuple[str, str]]()
        for r in range(rounds):
            if r == 2:
                before = by_kind()
                batches0, ops0 = rt.store.writer_stats
            c0, t0 = time.process_time(), time.perf_counter()
            start[r].wait()
            sent[r].wait()
            for k in range(senders):
                for reply in replies.pop((r, k)):
                    reply.get(timeout=300)
            took, cpu = time.perf_counter() - t0, time.process_time() - c0
            if r == rounds - 1:
                after = by_kind()
                batches1, ops1 = rt.store.writer_stats
            live = sum(1 for a in rt.host.live_ids() if a.startswith("sup/c"))
            rates.append(SUPERVISED / took)
            cpus.append(cpu / SUPERVISED * 1e6)
            print(
                f"round {r + 1}: {rates[-1]:,.0f} messages/s, {cpus[-1]:,.0f} µs of CPU per "
                f"message, {cpu / took:.2f} of a core, {live:,} children live",
                flush=True,
            )
        sent[rounds].wait()
        for t in threads:
            t.join()
        counted = (rounds - 2) * SUPERVISED
        kinds = sorted({kind for kind, _ in after})
        per = {
            kind: {f: (after[kind, f] - before[kind, f]) / counted for f in _FIGURES}
            for kind in kinds
        }
        batch = (ops1 - ops0) / max(1, batches1 - batches0)
        return {"rates": rates, "cpus": cpus, "by_kind": per, "batch": batch}
    finally:
        rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of 1,000 messages (≥ 3)")
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the first two are the warm-up)")
    schema = f"promissory_bench_cpu_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        got = measure(with_search_path(args.dsn, schema), args.rounds, args.senders)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    warm = slice(2, None)
    print(
        f"\nrounds 3–{args.rounds}, median: {statistics.median(got['rates'][warm]):,.0f} "
        f"messages/s, {statistics.median(got['cpus'][warm]):,.0f} µs of CPU per message; "
        f"{got['batch']:.1f} writes per batch\n"
    )
    print("| thread | CPU µs / message | voluntary switches / message | involuntary |")
    print("|---|---|---|---|")
    total = collections.Counter[str]()
    for kind, figures in got["by_kind"].items():
        if figures["cpu"] < 0.5 and figures["voluntary"] < 0.01:
            continue
        total.update(figures)
        print(
            f"| {kind} | {figures['cpu']:,.0f} | {figures['voluntary']:.2f} | "
            f"{figures['involuntary']:.2f} |"
        )
    print(f"| all | {total['cpu']:,.0f} | {total['voluntary']:.2f} | {total['involuntary']:.2f} |")


if __name__ == "__main__":
    if not os.path.exists("/proc/self/task"):
        sys.exit("message_cpu.py reads /proc/self/task: Linux only")
    main()
