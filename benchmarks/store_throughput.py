"""Promise-store write throughput against the database's own ceiling, side by side.

Usage::

    .venv/bin/python benchmarks/store_throughput.py [--dsn DSN] [--seconds S] [--repeat N]

One run measures these workloads, interleaved (every repetition runs each workload once, in a
rotated order, each trial in a fresh child process), and prints medians with their spread:

store-1          ``Store.create`` then ``Store.resolve`` of the same new id, 1 caller thread
store-32         the same from 32 caller threads (one Store, so one group-commit writer)
pg-1             plain psycopg: INSERT, then UPDATE, each its own transaction (autocommit),
                 1 connection, sequential: the "one commit per operation" ceiling
pg-32            the same from 32 threads, each with its own connection
pg-batch-K       plain psycopg on 1 connection: BEGIN, K INSERTs (executemany), K UPDATEs
                 (executemany), COMMIT, all in one pipeline round trip: K pairs per commit.
                 K = 8 is the 16 ops per commit that 32 alternating callers can fill; the
                 fastest K is reported as the batched ceiling.

A *pair* is one create plus one resolve of a fresh id; an *op* is one of the two writes. The
plain-psycopg workloads write the same ``promises`` table (same indexes and triggers) as the
store, without ``RETURNING`` and without the store's read-back statements.

Every trial starts on an empty table (``TRUNCATE`` outside the measured window), runs
``--warmup`` seconds unmeasured and then ``--seconds`` measured. Around each trial the parent
reads, on fresh connections, ``pg_stat_get_db_xact_commit`` of the database and
``pg_current_wal_lsn()``. PostgreSQL 15 flushes a backend's statistics lazily (at most once a
second while busy, and up to 10 s late when it goes idle) but always when the backend exits,
and has no ``pg_stat_force_next_flush()``; so the child closes all its connections before it
exits and the parent waits ``--settle`` seconds before reading. The counts then cover the
whole child (connect, warm-up, measured window, close): they are divided by every op the child
did, after subtracting what an *empty* child of the same workload costs (connects and
disconnects, writes nothing; the least of three runs). ``xact_commit`` counts every session of
the database and the WAL position the whole cluster, and other sessions only add to both, so
the table shows the least per-op figure over the repetitions; a watcher polls
``pg_stat_activity`` and the CPU time of other processes during each trial, and the table
counts the trials in which it saw other work.

The benchmark creates its own schema (``promissory_bench_<random>``), reaches it through the
DSN's ``options=-csearch_path=...``, and drops it at the end; it touches no other schema.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from _common import (
    DEFAULT_DSN,
    PG_INSERT,
    PG_UPDATE,
    Watcher,
    counters,
    pg_batch,
    spread,
    with_search_path,
)

WORKLOADS = [
    "store-1",
    "store-32",
    "pg-1",
    "pg-32",
    "pg-batch-8",
    "pg-batch-16",
    "pg-batch-32",
    "pg-batch-64",
]
BASELINE = "store-1"


# -- the child: one trial of one workload ------------------------------------------------------


class Clock:
    """The trial's timeline: warm-up until ``measure_from``, measured until ``stop_at``."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.start = time.monotonic()
        self.measure_from = self.start + warmup
        self.stop_at = self.measure_from + seconds


def _run_threads(n: int, body: Callable[[int, Clock, list[int]], None], clock_args: Any) -> dict:
    """Run ``body(thread_index, clock, counts)`` in ``n`` threads; counts = [measured, total]."""
    counts = [[0, 0] for _ in range(n)]
    barrier = threading.Barrier(n + 1)
    clock_box: list[Clock] = []

    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            body(i, clock_box[0], counts[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    clock_box.append(Clock(*clock_args))
    barrier.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    clock = clock_box[0]
    return {
        "pairs": sum(c[0] for c in counts),
        "pairs_total": sum(c[1] for c in counts),
        "seconds": clock.stop_at - clock.measure_from,
    }


def _pair_loop(clock: Clock, counts: list[int], do_pair: Callable[[int], None]) -> None:
    i = 0
    measure_from, stop_at = clock.measure_from, clock.stop_at
    while True:
        do_pair(i)
        i += 1
        now = time.monotonic()
        counts[1] += 1
        if now >= stop_at:
            return
        if now >= measure_from:
            counts[0] += 1


def trial_store(dsn: str, threads: int, clock_args: Any, empty: bool) -> dict:
    from promissory.store import Store

    store = Store(dsn, pool_size=1)
    try:
        if empty:
            return {"pairs": 0, "pairs_total": 0, "seconds": 0.0}
        marks: dict[str, tuple[int, int]] = {}
        marker: list[threading.Thread] = []

        def body(t: int, clock: Clock, counts: list[int]) -> None:
            create, resolve = store.create, store.resolve
            prefix = f"bench/{t}/"
            if t == 0:
                # writer (batches, ops) at the window's edges
                marker.append(threading.Thread(target=mark, args=(clock,), daemon=True))
                marker[0].start()

            def pair(i: int) -> None:
                pid = prefix + str(i)
                create(pid)
                resolve(pid)

            _pair_loop(clock, counts, pair)

        def mark(clock: Clock) -> None:
            time.sleep(max(0.0, clock.measure_from - time.monotonic()))
            marks["from"] = store.writer_stats
            time.sleep(max(0.0, clock.stop_at - time.monotonic()))
            marks["to"] = store.writer_stats

        result = _run_threads(threads, body, clock_args)
        marker[0].join()
        if "from" in marks and "to" in marks:
            batches = marks["to"][0] - marks["from"][0]
            ops = marks["to"][1] - marks["from"][1]
            result["ops_per_batch"] = ops / batches if batches else None
        return result
    finally:
        store.close()


def trial_pg(dsn: str, threads: int, clock_args: Any, empty: bool) -> dict:
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
    try:
        if empty:
            return {"pairs": 0, "pairs_total": 0, "seconds": 0.0}

        def body(t: int, clock: Clock, counts: list[int]) -> None:
            cur = conns[t].cursor()
            prefix = f"bench/{t}/"

            def pair(i: int) -> None:
                pid = (prefix + str(i),)
                cur.execute(PG_INSERT, pid)
                cur.execute(PG_UPDATE, pid)

            _pair_loop(clock, counts, pair)

        return _run_threads(threads, body, clock_args)
    finally:
        for c in conns:
            c.close()


def trial_pg_batch(dsn: str, per_commit: int, clock_args: Any, empty: bool) -> dict:
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        if empty:
            return {"pairs": 0, "pairs_total": 0, "seconds": 0.0}

        def body(t: int, clock: Clock, counts: list[int]) -> None:
            cur = conn.cursor()
            n = 0
            measure_from, stop_at = clock.measure_from, clock.stop_at
            with conn.pipeline() as pipeline:
                while True:
                    ids = [(f"bench/0/{n + k}",) for k in range(per_commit)]
                    n += per_commit
                    pg_batch(cur, pipeline, ids)
                    now = time.monotonic()
                    counts[1] += per_commit
                    if now >= stop_at:
                        return
                    if now >= measure_from:
                        counts[0] += per_commit

        return _run_threads(1, body, clock_args)
    finally:
        conn.close()


def run_trial(name: str, dsn: str, warmup: float, seconds: float, empty: bool) -> dict:
    clock_args = (warmup, seconds)
    kind, _, arg = name.rpartition("-")
    n = int(arg)
    if kind == "store":
        return trial_store(dsn, n, clock_args, empty)
    if kind == "pg":
        return trial_pg(dsn, n, clock_args, empty)
    if kind == "pg-batch":
        return trial_pg_batch(dsn, n, clock_args, empty)
    raise SystemExit(f"unknown workload {name!r}")


# -- the parent: schema, interleaving, counters, the table ------------------------------------


def child(name: str, dsn: str, warmup: float, seconds: float, empty: bool) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--dsn",
        dsn,
        "--warmup",
        str(warmup),
        "--seconds",
        str(seconds),
    ]
    if empty:
        cmd.append("--empty")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(name: str, dsn: str, args: argparse.Namespace, empty: bool = False) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE promises CASCADE")
    time.sleep(args.settle)
    before = counters(dsn)
    watcher = Watcher(dsn)
    try:
        result = child(name, dsn, args.warmup, args.seconds, empty)
    finally:
        watcher.close()
    time.sleep(args.settle)
    after = counters(dsn)
    result.update({k: after[k] - before[k] for k in before})
    result["commits"] -= watcher.polls
    result["others"] = sorted(watcher.seen)
    result["other_cores"] = watcher.other_cores
    if not empty:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'resolved'), count(*) FROM promises"
            ).fetchone()
        assert row is not None
        if row[0] != result["pairs_total"] or row[1] != result["pairs_total"]:
            raise SystemExit(f"{name}: {row} rows in the table, {result['pairs_total']} pairs done")
    return result


def idle_window(dsn: str, seconds: float) -> str:
    """Commits/s in the database and WAL B/s in the cluster while the benchmark does nothing."""
    before = counters(dsn)
    watcher = Watcher(dsn)
    time.sleep(seconds)
    watcher.close()
    time.sleep(0.5)
    after = counters(dsn)
    commits = (after["commits"] - before["commits"] - watcher.polls) / seconds
    wal = (after["wal"] - before["wal"]) / seconds
    others = "; ".join(sorted(watcher.seen)) or "no other sessions seen"
    return f"{commits:.1f} commits/s, {wal:,.0f} WAL B/s ({others})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("PROMISSORY_DSN", DEFAULT_DSN))
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per trial")
    ap.add_argument("--repeat", type=int, default=5, help="repetitions of every workload")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per trial")
    ap.add_argument(
        "--settle", type=float, default=0.5, help="pause before reading the statistics counters"
    )
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    ap.add_argument("--json", help="also write every trial's figures to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--empty", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--truncate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        if args.truncate:  # only for running a child by hand (profiling)
            with psycopg.connect(args.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE promises CASCADE")
        result = run_trial(args.child, args.dsn, args.warmup, args.seconds, args.empty)
        print(json.dumps(result))
        return

    workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    schema = "promissory_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        info = conn.execute(
            "SELECT version(), current_setting('synchronous_commit'), "
            "current_setting('fsync'), current_setting('commit_delay')"
        ).fetchone()
    dsn = with_search_path(args.dsn, schema)
    try:
        from promissory.store import Store

        Store(dsn).close()  # create the tables
        import msgspec

        import promissory

        print(f"# {info[0]}")
        print(f"# synchronous_commit={info[1]} fsync={info[2]} commit_delay={info[3]}")
        print(
            f"# Python {sys.version.split()[0]}, psycopg {psycopg.__version__} "
            f"(libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}), msgspec "
            f"{msgspec.__version__}, promissory from {os.path.dirname(promissory.__file__)}"
        )
        print(
            f"# schema {schema}; {args.repeat} x {len(workloads)} trials of "
            f"{args.warmup} s warm-up + {args.seconds} s measured, interleaved"
        )

        # Calibration: what an empty child costs in commits and WAL, and the idle commit rate.
        idle_start = idle_window(dsn, args.seconds)
        print(f"# idle before: {idle_start}")

        # Each trial is preceded by an empty child of the same workload; other sessions only
        # add to the counters, so the least empty cost over the repetitions is subtracted.
        trials: dict[str, list[dict]] = {name: [] for name in workloads}
        empties: dict[str, list[dict]] = {name: [] for name in workloads}
        for rep in range(args.repeat):
            order = workloads[rep % len(workloads) :] + workloads[: rep % len(workloads)]
            for name in order:
                empties[name].append(measured(name, dsn, args, empty=True))
                r = measured(name, dsn, args)
                r["rate"] = r["pairs"] / r["seconds"]
                r["rep"] = rep
                trials[name].append(r)
                ops = 2 * r["pairs_total"]
                extra = f", {r['ops_per_batch']:.1f} ops/batch" if r.get("ops_per_batch") else ""
                ckpt = ", CHECKPOINT during trial" if r["checkpoints"] else ""
                if r["others"]:
                    ckpt += "; also active: " + "; ".join(r["others"])
                print(
                    f"  rep {rep} {name:12s} {r['rate']:9,.0f} pairs/s, raw "
                    f"{r['commits'] / ops:.3f} commits/op, {r['wal'] / ops:.0f} WAL B/op"
                    f"{extra}{ckpt}",
                    flush=True,
                )
        overhead = {
            n: {k: min(e[k] for e in es) for k in ("commits", "wal")} for n, es in empties.items()
        }
        print(
            "# empty-child cost subtracted, least over the repetitions (commits, WAL B): "
            + ", ".join(f"{n} {o['commits']}/{o['wal']}" for n, o in overhead.items())
        )
        for name, ts in trials.items():
            for r in ts:
                ops = 2 * r["pairs_total"]
                r["commits_per_op"] = (r["commits"] - overhead[name]["commits"]) / ops
                r["wal_per_op"] = (r["wal"] - overhead[name]["wal"]) / ops

        idle_end = idle_window(dsn, args.seconds)
        print(f"# idle after: {idle_end}")
        report(trials, workloads)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"overhead": overhead, "idle": [idle_start, idle_end], "trials": trials},
                    f,
                    indent=1,
                )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(trials: dict[str, list[dict]], workloads: list[str]) -> None:
    med = {n: statistics.median(t["rate"] for t in ts) for n, ts in trials.items()}
    batched = [n for n in workloads if n.startswith("pg-batch")]
    ceiling_name = max(batched, key=lambda n: med[n]) if batched else None
    base = med.get(BASELINE)
    print()
    print(
        f"| workload | median pairs/s | spread min–max (IQR) | × 1 writer ({BASELINE}) | "
        f"× batched ceiling{f' ({ceiling_name})' if ceiling_name else ''} | "
        "commits/op | WAL B/op | ops/commit (client side) | trials disturbed |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in workloads:
        ts = trials[n]
        rates = [t["rate"] for t in ts]
        # The counters are database- and cluster-wide, and other sessions only add to them:
        # the least per-op figure over the trials is the benchmark's own.
        cpo = min(t["commits_per_op"] for t in ts)
        wpo = min(t["wal_per_op"] for t in ts)
        x_base = med[n] / base if base else float("nan")
        x_ceil = med[n] / med[ceiling_name] if ceiling_name else float("nan")
        kind, _, arg = n.rpartition("-")
        if kind == "store":
            per_commit = f"{statistics.median(t.get('ops_per_batch') or 0 for t in ts):.1f}"
        elif kind == "pg":
            per_commit = "1"
        else:
            per_commit = str(2 * int(arg))
        disturbed = sum(1 for t in ts if t["others"])
        print(
            f"| {n} | {med[n]:,.0f} | {spread(rates)} | {x_base:.2f} | {x_ceil:.2f} | "
            f"{cpo:.3f} | {wpo:,.0f} | {per_commit} | {disturbed}/{len(ts)} |"
        )
    print(
        "\ncommits/op, WAL B/op: the least over the trials (other sessions only add to these "
        "database- and cluster-wide counters); trials disturbed: another session or process "
        "was seen working during the trial"
    )
    if "store-32" in trials and "store-1" in trials and ceiling_name:
        # paired by repetition: the trials of one repetition ran at most a minute apart
        r1 = [
            a["rate"] / b["rate"]
            for a, b in zip(trials["store-32"], trials["store-1"], strict=True)
        ]
        rc = [
            a["rate"] / c["rate"]
            for a, c in zip(trials["store-32"], trials[ceiling_name], strict=True)
        ]
        a1 = med["store-32"] / med["store-1"]
        a2 = med["store-32"] / med[ceiling_name]
        print()
        print(
            f"aim 1: store-32 / store-1 = {a1:.2f} (per repetition {min(r1):.2f}–{max(r1):.2f});"
            f" aim ≥ 5: {'met' if a1 >= 5 else 'NOT met'}"
        )
        print(
            f"aim 2: store-32 / {ceiling_name} = {a2:.2f} (per repetition "
            f"{min(rc):.2f}–{max(rc):.2f}); aim ≥ 0.5: {'met' if a2 >= 0.5 else 'NOT met'}"
        )
        same = "pg-batch-8"  # 16 ops per commit: what 32 alternating callers can fill
        if same in trials:
            print(
                f"       store-32 / {same} (the ceiling at the batch size 32 callers fill) = "
                f"{med['store-32'] / med[same]:.2f}"
            )


if __name__ == "__main__":
    main()
