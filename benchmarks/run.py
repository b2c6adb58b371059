"""The benchmark suite: promissory beside the database ceiling, plain pykka and DBOS, in one run.

Usage::

    .venv/bin/python benchmarks/run.py [--quick] [--repeat N] [--only W1,W3,...] [--json FILE]

Workloads (BENCHMARKS.md says what each measures and why):

W1  sequential no-op steps in one message (one workflow): N = 0, 1, 10, 100; also with
    OpenTelemetry tracing on (``promissory+otel``: the in-memory exporter), when installed
W2  M actors (workflows) at once, 10 steps each: M = 10, 100, 1000, sent from up to 100 client
    threads as DBOS's are; at M = 100 also from one thread (``promissory, one sender``)
W3  SIGKILL at step 900 of 1,000, then restart: time to run again, replay, completion
W4  N actors parked in a durable sleep: resident memory and threads (N = 100 … 10,000)
W5  fan-out of 10 children, one crashing once (restarted by its policy); restarts per second
    of a one_for_one supervisor of 1,000 children, and messages per second to its children
    (from one sender, and from 8 senders at once; beside them pg-1: the same messages as
    plain SQL from 8 threads, a row inserted and settled, two commits each)
W6  latency from tell to the handler starting (activation live, and passivated); beside
    them pg-1: one step committed alone after the same 10 ms of quiet (the floor)
W7  a 100-turn agent with a 5 KB tool output: bytes stored; agent turns per second

Comparisons, each in child processes of this run, on the same PostgreSQL server:
``pg-1`` / ``pg-batch`` (the database's ceiling from psycopg: a step is a row inserted and
settled, one commit per step, or one commit per run), ``pykka`` (the same message pattern in
memory) and ``DBOS`` 3.4 (its own database; skipped when ``import dbos`` fails).

Method (the same as ``store_throughput.py``, shared in ``_common.py``): every trial is a fresh
child process; every repetition runs every trial once, in a rotated order, so the systems are
interleaved and their ratios hold on a noisy machine. The figure is the median over the
repetitions of each trial's own median, with the min–max over repetitions as the spread.
Commits (``xact_commit`` of the system's own database) and WAL (``pg_current_wal_lsn``) are
read around each child, after a settle (PostgreSQL 15 flushes a backend's statistics when it
exits); from them the suite subtracts the system's idle cost, measured by children that only
open the system and wait (a fixed cost per process plus a rate per second open), and divides
by the steps the child did. WAL is cluster-wide and other sessions only add to it, so the
least value over the repetitions is shown. A watcher flags trials during which other sessions
or processes were working.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

os.environ.setdefault("PROMISSORY_BENCH_APP", f"promissory-bench-{os.getpid()}")
from _common import (  # noqa: E402
    DEFAULT_DSN,
    Watcher,
    as_url,
    counters,
    percentile,
    run_child,
    with_database,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ME = os.path.abspath(__file__)
PROMISSORY, DBOS, PG1, PGB, PYKKA = "promissory", "DBOS", "pg-1", "pg-batch", "pykka"
PROMISSORY_OTEL = "promissory+otel"
PROMISSORY_ONE = "promissory, one sender"
"""promissory with OpenTelemetry tracing on (the ``otel`` extra, in-memory exporter)."""
SYSTEMS = [PROMISSORY, PROMISSORY_OTEL, PROMISSORY_ONE, PG1, PGB, PYKKA, DBOS]
OTEL = importlib.util.find_spec("opentelemetry") is not None and (
    importlib.util.find_spec("opentelemetry.sdk") is not None
)
ALL = ["W1", "W2", "W3", "W4", "W5", "W6", "W7"]


# -- metrics: what a trial's result becomes --------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    lower_is_better: bool
    fmt: str = "{:,.1f}"

    def show(self, v: float | None) -> str:
        if v is None or v != v:
            return "—"
        return self.fmt.format(v) + (f" {self.unit}" if self.unit else "")


M = {
    m.name: m
    for m in [
        Metric("ms/run", "ms", True, "{:,.2f}"),
        Metric("steps/s", "steps/s", False, "{:,.0f}"),
        Metric("wall", "s", True, "{:,.2f}"),
        Metric("open→running", "ms", True, "{:,.1f}"),
        Metric("replay", "ms", True, "{:,.1f}"),
        Metric("restart→done", "ms", True, "{:,.0f}"),
        Metric("KB/waiter", "KB", True, "{:,.2f}"),
        Metric("threads", "", True, "{:,.0f}"),
        Metric("RSS", "MB", True, "{:,.0f}"),
        Metric("fan ms", "ms", True, "{:,.1f}"),
        Metric("fan ok ms", "ms", True, "{:,.1f}"),
        Metric("crash→handled", "ms", True, "{:,.1f}"),
        Metric("restarts/s", "/s", False, "{:,.0f}"),
        Metric("msgs/s", "/s", False, "{:,.0f}"),
        Metric("live", "% live", False, "{:,.0f}"),
        Metric("p50", "ms", True, "{:,.2f}"),
        Metric("p99", "ms", True, "{:,.2f}"),
        Metric("KB stored", "KB", True, "{:,.0f}"),
        Metric("JSON KB", "KB", True, "{:,.0f}"),
        Metric("turns/s", "turns/s", False, "{:,.0f}"),
        Metric("tracing cost", "%", True, "{:+,.1f}"),
        Metric("tracing CPU", "%", True, "{:+,.1f}"),
    ]
}


COMPANIONS = {"steps/s": ("ms/run", "wall"), "turns/s": ("wall",), "msgs/s": ("live",)}
"""A figure shown in brackets beside another of the same trial, instead of in a row of its
own (``1,224 steps/s (81.7 ms)``)."""


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def per_run(r: dict[str, Any]) -> dict[str, float]:
    s = med(r["samples"])
    out = {"ms/run": s * 1000}
    if r["units"]:
        out["steps/s"] = r["units"] / s
    return out


def per_run_traced(r: dict[str, Any]) -> dict[str, float]:
    """A traced W1 trial: its own ms/run, and the median cost of tracing over the pairs of
    messages it sent alternately traced and not (the same actor, process and moment)."""
    out = per_run(r)
    both = zip(r["samples"], r["off_samples"], strict=True)
    pairs = [on / off - 1 for on, off in both if off > 0]
    if pairs:
        out["tracing cost"] = med(pairs) * 100
    if r.get("cpu_on") and r.get("cpu_off"):
        # The process's own CPU per message (every thread): what tracing adds, whatever the
        # database and the other processes of the machine are doing.
        out["tracing CPU"] = (med(r["cpu_on"]) / med(r["cpu_off"]) - 1) * 100
    return out


def per_batch(r: dict[str, Any]) -> dict[str, float]:
    s = med(r["samples"])
    return {"wall": s, "steps/s": r["units"] / s}


def turns(r: dict[str, Any]) -> dict[str, float]:
    s = med(r["samples"])
    return {"wall": s, "turns/s": r["units"] / s}


def w3_metrics(r: dict[str, Any]) -> dict[str, float]:
    return {
        "open→running": (r["first_live_step"] - r["open_start"]) * 1000,
        "replay": (r["first_live_step"] - r["replay_start"]) * 1000,
        "restart→done": (r["done"] - r["popen"]) * 1000,
    }


def w4_metrics(r: dict[str, Any]) -> dict[str, float]:
    return {
        "KB/waiter": r["samples"][0] / 1024,
        "threads": r["threads_after"],
        "RSS": r["rss_after"] / 2**20,
    }


def w5_metrics(r: dict[str, Any]) -> dict[str, float]:
    out = {"fan ms": med(r["samples"]) * 1000, "fan ok ms": med(r["ok_samples"]) * 1000}
    if r.get("restart_samples"):
        out["crash→handled"] = med(r["restart_samples"]) * 1000
    return out


def sup_metrics(r: dict[str, Any]) -> dict[str, float]:
    return {"restarts/s": r["units"] / r["samples"][0]}


def sup_ok_metrics(r: dict[str, Any]) -> dict[str, float]:
    out = {"msgs/s": r["units"] / r["samples"][0]}
    if r.get("children"):
        # The share of the children whose activation was still live (not passivated) when
        # the timed sends began: a passivated child's message starts a thread first, so the
        # figure depends on it (and it on how long touching every child took).
        out["live"] = 100 * r["live_at_start"] / r["children"]
    return out


def latency(r: dict[str, Any]) -> dict[str, float]:
    return {
        "p50": percentile(r["samples"], 50) * 1000,
        "p99": percentile(r["samples"], 99) * 1000,
    }


def stored(r: dict[str, Any]) -> dict[str, float]:
    out = {"KB stored": r["table_bytes"] / 1024}
    if "whole_history_bytes" in r:  # promissory's run: also what a whole-history design keeps
        out["KB stored@promissory rows (pg_column_size)"] = r["row_bytes"] / 1024
        out["JSON KB@promissory"] = r["delta_json_bytes"] / 1024
        out["JSON KB@whole history per step (computed)"] = r["whole_history_bytes"] / 1024
    return out


# -- trials ------------------------------------------------------------------------------------


@dataclass
class Trial:
    workload: str
    label: str
    system: str
    call: str
    args: dict[str, Any]
    metrics: Callable[[dict[str, Any]], dict[str, float]]
    reps: int = 99
    per: str = "step"
    kind: str = "plain"
    timeout: float = 300.0
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.label} · {self.system}"

    @property
    def target(self) -> str | None:
        if self.system.startswith(DBOS):
            return "dbos"
        if self.system in (PROMISSORY, PROMISSORY_OTEL, PROMISSORY_ONE, PG1, PGB):
            return "bench"
        return None


def plan(quick: bool, dbos: bool, only: list[str], repeat: int) -> list[Trial]:
    q = quick
    t: list[Trial] = []

    def add(*trials: Trial) -> None:
        for x in trials:
            if x.workload in only and (dbos or not x.system.startswith(DBOS)):
                t.append(x)

    # W1 ----------------------------------------------------------------------------------
    for n in (0, 1, 10, 100):
        runs = ({0: 10, 1: 10, 10: 5, 100: 3} if q else {0: 30, 1: 30, 10: 20, 100: 10})[n]
        warm = 1 if q else 3
        lab = f"W1 N={n}"
        a = {"n": n, "warmup": warm, "runs": runs}
        add(
            Trial("W1", lab, PROMISSORY, "_promissory:w1", a, per_run),
            Trial("W1", lab, DBOS, "_dbos:w1", a, per_run),
            Trial("W1", lab, PYKKA, "_plain:pykka_w1", a, per_run),
        )
        if OTEL:
            add(Trial("W1", lab, PROMISSORY_OTEL, "_promissory:w1_otel", a, per_run_traced))
        if n:
            add(Trial("W1", lab, PG1, "_plain:pg_w1", {**a, "per_commit": 1}, per_run))
        if n > 1:
            add(Trial("W1", lab, PGB, "_plain:pg_w1", {**a, "per_commit": n}, per_run))
    # W2 ----------------------------------------------------------------------------------
    for m in (10, 100) if q else (10, 100, 1000):
        batches = ({10: 3, 100: 2, 1000: 1} if q else {10: 10, 100: 5, 1000: 2})[m]
        warm = 0 if q and m == 1000 else 1
        lab = f"W2 {m}×10"
        a = {"steps": 10, "warmup": warm, "batches": batches}
        add(
            Trial("W2", lab, PROMISSORY, "_promissory:w2", {**a, "actors": m}, per_batch),
            Trial("W2", lab, PYKKA, "_plain:pykka_w2", {**a, "actors": m}, per_batch),
        )
        if m == 100:
            # Every message sent from one thread, each ask waiting for its own commit: W2 as
            # it was run before the eighth pass (DBOS's side sends from 100 threads).
            add(
                Trial(
                    "W2",
                    lab,
                    PROMISSORY_ONE,
                    "_promissory:w2",
                    {**a, "actors": m, "senders": 1},
                    per_batch,
                )
            )
        if not (q and m == 1000):
            dbos_batches = {10: batches, 100: batches, 1000: 1}[m]
            add(
                Trial(
                    "W2",
                    lab,
                    DBOS,
                    "_dbos:w2",
                    {
                        "workflows": m,
                        "steps": 10,
                        "warmup": 0 if m == 1000 else 1,
                        "batches": dbos_batches,
                    },
                    per_batch,
                    reps=2 if m == 1000 else 99,
                )
            )
    # W3 ----------------------------------------------------------------------------------
    w3 = {"n": 1000, "kill_at": 900}
    add(
        Trial(
            "W3",
            "W3 kill@900/1000",
            PROMISSORY,
            "_promissory:w3",
            w3,
            w3_metrics,
            kind="w3",
            per="recovery",
        ),
        Trial(
            "W3",
            "W3 kill@900/1000",
            DBOS,
            "_dbos:w3",
            w3,
            w3_metrics,
            kind="w3",
            per="recovery",
            reps=3 if not q else 1,
        ),
    )
    # W4 ----------------------------------------------------------------------------------
    sizes = (100, 1000) if q else (100, 1000, 10000)
    for n in sizes:
        a = {"waiters": n, "seconds": 3600.0}
        lab = f"W4 {n:,} waiters"
        add(
            Trial(
                "W4",
                lab,
                PROMISSORY,
                "_promissory:w4",
                a,
                w4_metrics,
                per="waiter",
                reps=min(repeat, 2 if n >= 10000 else 3),
                timeout=600.0,  # it parks 10,000 in two minutes or so
            ),
        )
        if n <= (100 if q else 1000):
            add(Trial("W4", lab, DBOS, "_dbos:w4", a, w4_metrics, per="waiter", reps=1))
            add(Trial("W4", lab, PYKKA, "_plain:pykka_w4", a, w4_metrics, reps=min(repeat, 3)))
    # W5 ----------------------------------------------------------------------------------
    fan = {"width": 10, "warmup": 1, "runs": 2 if q else 5}
    add(
        Trial(
            "W5",
            "W5 fan-out 10, 1 crashes",
            PROMISSORY,
            "_promissory:w5_fan",
            fan,
            w5_metrics,
            per="msg",
        ),
        Trial("W5", "W5 fan-out 10, 1 crashes", DBOS, "_dbos:w5_fan", fan, w5_metrics, per="msg"),
        Trial(
            "W5",
            "W5 fan-out 10, 1 crashes",
            PYKKA,
            "_plain:pykka_w5",
            fan,
            lambda r: {"fan ok ms": med(r["samples"]) * 1000},
        ),
    )
    children = 200 if q else 1000
    crashes = 50 if q else 200
    sup = {"crashes": crashes}
    lab = f"W5 supervisor of {children:,}, {crashes} restarts"
    for crash, suffix, metrics, per in (
        (True, "", sup_metrics, "restart"),
        (False, " (no crash)", sup_ok_metrics, "msg"),
    ):
        add(
            Trial(
                "W5",
                lab + suffix,
                PROMISSORY,
                "_promissory:w5_supervisor",
                {**sup, "crash": crash},
                metrics,
                per=per,
                kind=f"sup:{children}",
                reps=min(repeat, 3),
            )
        )
    # The same supervisor's children sent one message each by 8 callers at once: what they
    # handle per second when the sends do not wait for each other's commits.
    senders = 8
    add(
        Trial(
            "W5",
            f"W5 supervisor of {children:,}, {children:,} messages from {senders} senders",
            PROMISSORY,
            "_promissory:w5_supervisor",
            {"crashes": children, "crash": False, "senders": senders},
            sup_ok_metrics,
            per="msg",
            kind=f"sup:{children}",
            reps=min(repeat, 3),
        ),
        # The database's side of the same pattern: each message a row inserted and settled,
        # two commits, from the same number of threads with plain psycopg.
        Trial(
            "W5",
            f"W5 supervisor of {children:,}, {children:,} messages from {senders} senders",
            PG1,
            "_plain:pg_w5_messages",
            {"messages": children, "senders": senders},
            sup_ok_metrics,
            per="msg",
            reps=min(repeat, 3),
        ),
    )
    # W6 ----------------------------------------------------------------------------------
    n_act, n_pas, n_q = (20, 10, 3) if q else (100, 50, 10)
    add(
        Trial(
            "W6",
            "W6 tell→handler, idle actor",
            PROMISSORY,
            "_promissory:w6",
            {"passivated": False, "samples": n_act},
            latency,
            per="msg",
        ),
        Trial(
            "W6",
            "W6 tell→handler, idle actor",
            PYKKA,
            "_plain:pykka_w6",
            {"fresh": False, "samples": n_act},
            latency,
        ),
        Trial(
            "W6",
            "W6 tell→handler, idle actor",
            DBOS,
            "_dbos:w6",
            {"queued": False, "samples": n_act},
            latency,
            per="msg",
        ),
        Trial(
            "W6",
            "W6 tell→handler, idle actor",
            DBOS + " queue",
            "_dbos:w6",
            {"queued": True, "samples": n_q},
            latency,
            per="msg",
            reps=min(repeat, 2),
        ),
        # The database's floor beside them: one step committed alone, 10 ms after the last.
        Trial(
            "W6",
            "W6 tell→handler, idle actor",
            PG1,
            "_plain:pg_w6",
            {"samples": n_act},
            latency,
            per="msg",
        ),
        Trial(
            "W6",
            "W6 tell→handler, passivated",
            PROMISSORY,
            "_promissory:w6",
            {"passivated": True, "samples": n_pas},
            latency,
            per="msg",
        ),
        # The idle case with the tells 70 ms apart: what a longer quiet spell costs on this
        # machine, whatever the tell wakes (the passivated trial's tells came that far apart
        # before the eighth pass).
        Trial(
            "W6",
            "W6 tell→handler, idle actor, 70 ms apart",
            PROMISSORY,
            "_promissory:w6",
            {"passivated": False, "samples": n_pas, "pause": 0.07},
            latency,
            per="msg",
            reps=min(repeat, 3),
        ),
        Trial(
            "W6",
            "W6 tell→handler, passivated",
            PYKKA + " start",
            "_plain:pykka_w6",
            {"fresh": True, "samples": n_pas},
            latency,
        ),
    )
    # W7 ----------------------------------------------------------------------------------
    st = {"turns": 100, "text_size": 5000}
    add(
        Trial(
            "W7",
            "W7 100 turns × 5 KB: stored",
            PROMISSORY,
            "_promissory:w7_storage",
            st,
            stored,
            reps=min(repeat, 2),
        ),
        Trial("W7", "W7 100 turns × 5 KB: stored", DBOS, "_dbos:w7_storage", st, stored, reps=1),
    )
    one = {"agents": 1, "turns": 100, "warmup": 1, "batches": 2 if q else 3}
    many = {"agents": 100, "turns": 10, "warmup": 0 if q else 1, "batches": 1 if q else 2}
    add(
        Trial("W7", "W7 1 agent × 100 turns", PROMISSORY, "_promissory:w7_turns", one, turns),
        Trial("W7", "W7 1 agent × 100 turns", DBOS, "_dbos:w7_turns", one, turns),
        Trial("W7", "W7 100 agents × 10 turns", PROMISSORY, "_promissory:w7_turns", many, turns),
        Trial(
            "W7",
            "W7 100 agents × 10 turns",
            DBOS,
            "_dbos:w7_turns",
            many,
            turns,
            reps=min(repeat, 3),
        ),
    )
    return t


# -- running children ------------------------------------------------------------------------


def child_cmd(call: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, ME, "--child", call, "--args", json.dumps(args)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PROMISSORY_CRASH_AT", None)
    env.pop("PROMISSORY_EFFECTS", None)
    env.update(extra or {})
    return env


class Bench:
    """The run: its databases, calibration, and every trial's results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = args.dsn
        tag = uuid.uuid4().hex[:8]
        self.db = f"promissory_bench_{tag}"
        self.dbos_db = f"promissory_bench_dbos_{tag}"
        self.dsn = with_database(args.dsn, self.db)
        self.dbos_url = as_url(with_database(args.dsn, self.dbos_db))
        self.idle: dict[str, dict[str, float]] = {}
        self.with_dbos = False
        self.calibration: list[dict[str, Any]] = []

    def dbname(self, target: str) -> str:
        return self.db if target == "bench" else self.dbos_db

    def setup(self, dbos: bool) -> None:
        self.with_dbos = dbos
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
            if dbos:
                conn.execute(f'CREATE DATABASE "{self.dbos_db}"')
        from promissory.store import Store

        Store(self.dsn).close()  # the tables

    def teardown(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for db in (self.db, self.dbos_db):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def reset(self, target: str | None) -> None:
        """Empty the system's tables before a trial (outside the counted window)."""
        if target == "bench":
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                # CASCADE: the protocol's rpc_* rows go with the promises they belong to
                conn.execute("TRUNCATE promises, actors, nodes CASCADE")
        elif target == "dbos" and self.with_dbos:
            with psycopg.connect(as_url(with_database(self.admin, self.dbos_db))) as conn:
                conn.autocommit = True
                rows = conn.execute(
                    "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) "
                    "FROM pg_tables WHERE schemaname = 'dbos' "
                    "AND tablename NOT LIKE '%%migration%%'"
                ).fetchall()
                if rows:
                    conn.execute(f"TRUNCATE {', '.join(r[0] for r in rows)} CASCADE")

    def where(self, system: str) -> str:
        return self.dbos_url if system == DBOS or system.startswith(DBOS) else self.dsn

    def counted(self, target: str | None, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``body`` (which runs children) between two reads of the counters."""
        settle = self.args.settle
        time.sleep(settle)
        before = counters(self.admin, self.dbname(target)) if target else None
        watcher = Watcher(
            self.admin, mine=(ME.encode(), b"benchmarks/run.py"), databases=[self.db, self.dbos_db]
        )
        try:
            result = body()
        finally:
            watcher.close()
        if target:
            time.sleep(settle)
            after = counters(self.admin, self.dbname(target))
            assert before is not None
            result["delta"] = {k: after[k] - before[k] for k in before}
        result["others"] = sorted(watcher.seen)
        result["other_cores"] = watcher.other_cores
        return result

    # -- calibration -------------------------------------------------------------------------

    def calibrate(self, systems: list[str], holds: tuple[float, ...]) -> None:
        """Children that open a system and close it after ``hold`` seconds, doing nothing:
        the system's cost per process (hold 0) and per second open. Every calibration child
        of the run counts; other sessions only add to the counters, so the least fixed cost
        and the least rate are the system's own."""
        if DBOS in systems and not self.calibration:
            # DBOS creates its tables at its first launch: not counted
            run_child(child_cmd("_dbos:idle", {"url": self.dbos_url, "hold": 0.0}), 120)
        for system, call, target in (
            (PROMISSORY, "_promissory:idle", "bench"),
            (DBOS, "_dbos:idle", "dbos"),
        ):
            if system not in systems:
                continue
            for h in holds:
                self.reset(target)
                r = self.counted(
                    target,
                    lambda call=call, h=h, system=system: run_child(
                        child_cmd(
                            call,
                            {"url" if system == DBOS else "dsn": self.where(system), "hold": h},
                        ),
                        timeout=120,
                        env=child_env(),
                    ),
                )
                r["system"], r["asked_hold"] = system, h
                self.calibration.append(r)
            runs = [r for r in self.calibration if r["system"] == system]
            zero = [r for r in runs if r["asked_hold"] == 0.0]
            held = [r for r in runs if r["asked_hold"] > 0]
            idle: dict[str, float] = {"hold": min(r["hold"] for r in zero)}
            for k in ("commits", "wal", "xids"):
                idle[k] = min(r["delta"][k] for r in zero)
                idle[f"{k}_per_s"] = max(
                    0.0,
                    min(
                        (r["delta"][k] - idle[k]) / max(1e-3, r["hold"] - idle["hold"])
                        for r in held
                    ),
                )
            self.idle[system] = idle
            i = idle
            print(
                f"# idle {system}: {i['commits']:.0f} commits, {i['wal']:,.0f} WAL B, "
                f"{i['xids']:.0f} xids per process (open+close, {i['hold']:.2f} s), then "
                f"{i['commits_per_s']:.2f} commits/s, {i['wal_per_s']:,.0f} WAL B/s, "
                f"{i['xids_per_s']:.2f} xids/s while open (least over {len(zero)} + "
                f"{len(held)} idle children)",
                flush=True,
            )

    def net(self, system: str, r: dict[str, Any]) -> dict[str, float] | None:
        """The child's counts net of its system's idle cost."""
        d = r.get("delta")
        if d is None:
            return None
        family = DBOS if system.startswith(DBOS) else system
        base = self.idle.get(PROMISSORY if family in (PROMISSORY_OTEL, PROMISSORY_ONE) else family)
        hold = float(r.get("hold") or 0.0)
        out = {}
        for k in ("commits", "wal", "xids"):
            v = float(d[k])
            if base is not None:
                v -= base[k] + base[f"{k}_per_s"] * max(0.0, hold - base["hold"])
            out[k] = v
        return out

    # -- one trial ---------------------------------------------------------------------------

    def run(self, trial: Trial, rep: int) -> None:
        key = "url" if trial.system.startswith(DBOS) else "dsn"
        args = dict(trial.args)
        if trial.target:
            args[key] = self.where(trial.system)
        self.reset(trial.target)
        began = time.monotonic()
        try:
            if trial.kind == "w3":
                r = self.w3(trial, args, key)
            else:
                env = child_env()
                if trial.kind.startswith("sup:"):
                    env["PROMISSORY_BENCH_CHILDREN"] = trial.kind.split(":")[1]
                r = self.counted(
                    trial.target,
                    lambda: run_child(child_cmd(trial.call, args), trial.timeout, env),
                )
        except (RuntimeError, subprocess.TimeoutExpired, AssertionError, KeyError) as exc:
            # A trial that fails or hangs is reported as such; the suite goes on.
            why = (
                f"timed out after {trial.timeout:.0f} s"
                if isinstance(exc, subprocess.TimeoutExpired)
                else f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
            )
            trial.failures.append({"rep": rep, "why": why, "detail": str(exc)[-4000:]})
            print(f"  rep {rep} {trial.key}: FAILED ({why})", flush=True)
            return
        r["rep"] = rep
        r["trial_seconds"] = time.monotonic() - began
        r["metrics"] = trial.metrics(r)
        r["net"] = self.net(trial.system, r)
        trial.results.append(r)
        self.progress(trial, r)

    def w3(self, trial: Trial, args: dict[str, Any], key: str) -> dict[str, Any]:
        run_id = f"w3-{uuid.uuid4().hex[:8]}"
        n, kill_at = args.pop("n"), args.pop("kill_at")
        env = child_env()
        if trial.system == PROMISSORY:
            crash = {key: args[key], "n": n, "run_id": run_id}
            env["PROMISSORY_CRASH_AT"] = f"step.kept:{kill_at}"
        else:
            crash = {key: args[key], "n": n, "kill_at": kill_at, "run_id": run_id}
        module = trial.call.split(":")[0]
        proc = subprocess.run(
            child_cmd(f"{module}:w3_crash", crash),
            capture_output=True,
            text=True,
            timeout=trial.timeout,
            env=env,
            check=False,
        )
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(
                f"{trial.key}: the crash child was not killed (exit {proc.returncode})\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        restart = {key: args[key], "run_id": run_id, "imported_at": 0.0}

        def body() -> dict[str, Any]:
            popen = time.monotonic()
            out = run_child(child_cmd(f"{module}:w3_restart", restart), trial.timeout, child_env())
            out["popen"] = popen
            return out

        r = self.counted(trial.target, body)
        if r.get("value") != n or r.get("first_live_step") is None:
            raise RuntimeError(f"{trial.key}: the restarted run returned {r.get('value')!r}")
        return r

    def progress(self, trial: Trial, r: dict[str, Any]) -> None:
        ms = ", ".join(f"{k} {M[k.partition('@')[0]].show(v)}" for k, v in r["metrics"].items())
        net = r.get("net")
        extra = ""
        if net is not None:
            div = r.get("steps_total") or r.get("messages") or 0
            if div:
                unit = trial.per if r.get("steps_total") else "msg"
                extra = (
                    f"; {net['commits'] / div:.2f} commits/{unit}, "
                    f"{net['wal'] / div:,.0f} WAL B/{unit} (raw {r['delta']['commits']} commits)"
                )
            else:
                extra = f"; {net['commits']:.0f} commits net"
        if r.get("checkpoints") or (r.get("delta") or {}).get("checkpoints"):
            extra += ", CHECKPOINT during trial"
        if r["others"]:
            extra += "; also active: " + "; ".join(r["others"])
        print(f"  rep {r['rep']} {trial.key} ({r['trial_seconds']:.1f} s): {ms}{extra}", flush=True)


# -- the report -------------------------------------------------------------------------------


def per_unit(bench: Bench | None, trial: Trial) -> tuple[float | None, float | None, str]:
    """Commits and WAL per step (or per waiter, restart, message) of a trial: commits the
    median over its repetitions, WAL the least (other sessions only add to it)."""
    commits, wal = [], []
    unit = trial.per
    for r in trial.results:
        net = r.get("net")
        if net is None:
            continue
        div = r.get("steps_total") or 0
        if not div:
            div, unit = r.get("messages") or 0, "msg"
        if not div:
            continue
        commits.append(net["commits"] / div)
        wal.append(net["wal"] / div)
    if not commits:
        return None, None, unit
    return med(commits), min(wal), unit


def store_cost(trial: Trial, trials: list[Trial]) -> str:
    """promissory's own count of its write transactions and reads per unit of the timed part
    (median over reps), beside the database's commit count: that one also counts the
    transaction in which each listening session reads a NOTIFY, and other sessions' work.
    For the supervisor's trial, per restart: beyond the same messages not crashing."""

    def per(t: Trial) -> tuple[float, float] | None:
        counts = [r["store_count"] for r in t.results if r.get("store_count")]
        if not counts:
            return None
        w = med([c["writes"] / max(1, c["units"]) for c in counts])
        r = med([c["reads"] / max(1, c["units"]) for c in counts])
        return w, r

    mine = per(trial)
    if mine is None:
        return ""
    if trial.kind.startswith("sup:"):
        if not trial.args.get("crash"):
            return ""
        ok = next((t for t in trials if t.label == trial.label + " (no crash)"), None)
        base = per(ok) if ok is not None else None
        if base is None:
            return ""
        mine = (mine[0] - base[0], mine[1] - base[1])
    return f"; store: {mine[0]:.2f} writes, {mine[1]:.2f} reads"


def restart_cost(trials: list[Trial]) -> dict[str, tuple[float, float, str]]:
    """Commits and WAL per restart of the supervisor trial: what its crashing messages cost
    beyond the same messages not crashing (the two trials set up the same tree)."""
    out: dict[str, tuple[float, float, str]] = {}
    for crash in trials:
        if not (crash.kind.startswith("sup:") and crash.args.get("crash") and crash.results):
            continue
        ok = next((t for t in trials if t.label == crash.label + " (no crash)"), None)
        if ok is None or not ok.results:
            continue
        k = crash.args["crashes"]
        nets = [[r["net"] for r in t.results if r.get("net")] for t in (crash, ok)]
        if not nets[0] or not nets[1]:
            continue
        c = (med([n["commits"] for n in nets[0]]) - med([n["commits"] for n in nets[1]])) / k
        w = (min(n["wal"] for n in nets[0]) - min(n["wal"] for n in nets[1])) / k
        out[crash.key] = (c, w, "restart")
        out[ok.key] = (float("nan"), float("nan"), "msg")
    return out


def report(bench: Bench | None, trials: list[Trial]) -> dict[str, Any]:
    # a metric "name@system" is a row of figure "name" for a derived "system" (W7's
    # computed whole-history design), from the same trial
    groups: dict[tuple[str, str], list[tuple[Trial, str, str, list[float]]]] = {}
    order: list[tuple[str, str]] = []
    for t in trials:
        if t.failures:
            order.append((t.key, "FAILED"))
        if not t.results:
            continue
        names = list(t.results[0]["metrics"])
        folded = {c for n in names for c in COMPANIONS.get(n, ()) if c in names}
        for key in names:
            if key in folded:
                continue
            name, _, derived = key.partition("@")
            vals = [r["metrics"][key] for r in t.results if key in r["metrics"]]
            g = (t.label.removesuffix(" (no crash)"), name)
            if g not in groups:
                groups[g] = []
                order.append(g)
            groups[g].append((t, derived or t.system, key, vals))
    print()
    print(
        "| workload | figure | system | median | spread over reps (min–max) | reps | "
        "promissory's advantage | commits / unit | WAL B / unit | disturbed |"
    )
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    rows = []
    shown_counts: set[str] = set()
    overrides = restart_cost(trials)
    failed = {t.key: t for t in trials if t.failures}
    for g in order:
        label, name = g
        if name == "FAILED":
            t = failed[label]
            why = "; ".join(sorted({f["why"] for f in t.failures}))
            print(
                f"| {t.label} | — | {t.system} | FAILED in {len(t.failures)} of "
                f"{len(t.failures) + len(t.results)} reps: {why} | | | | | | |"
            )
            rows.append({"workload": t.label, "system": t.system, "failed": why})
            continue
        metric = M[name]
        members = groups[g]
        ours = next((vals for _, system, _, vals in members if system == PROMISSORY), None)
        mine = med(ours) if ours else None
        for t, system, key, vals in members:
            m = med(vals)
            adv = ""
            if mine is not None and not system.startswith(PROMISSORY) and m == m and mine:
                ratio = m / mine if metric.lower_is_better else mine / m
                adv = f"{ratio:,.2f}×"
            counts = ("", "")
            if t.key not in shown_counts and system == t.system:
                c, w, unit = overrides.get(t.key) or per_unit(bench, t)
                if c is not None and c == c:
                    counts = (f"{c:,.2f} / {unit}{store_cost(t, trials)}", f"{w:,.0f} / {unit}")
                    shown_counts.add(t.key)
            disturbed = sum(1 for r in t.results if r["others"])
            spread = f"{metric.show(min(vals))} – {metric.show(max(vals))}" if len(vals) > 1 else ""
            shown = metric.show(m)
            for c in COMPANIONS.get(name, ()):
                cvals = [r["metrics"][c] for r in t.results if c in r["metrics"]]
                if cvals and key == name:
                    shown += f" ({M[c].show(med(cvals))})"
            print(
                f"| {label} | {name} | {system} | {shown} | {spread} | {len(vals)} "
                f"| {adv} | {counts[0]} | {counts[1]} | {disturbed}/{len(t.results)} |"
            )
            rows.append(
                {
                    "workload": label,
                    "figure": name,
                    "system": system,
                    "median": m,
                    "values": vals,
                    "advantage": adv,
                    "commits_per_unit": counts[0],
                    "wal_per_unit": counts[1],
                    "disturbed": disturbed,
                }
            )
    print(
        "\npromissory's advantage: how many times better promissory's median is (its rate ÷ "
        "the other's, or the other's time ÷ its); commits / unit: net of the system's idle "
        "cost, median over reps; WAL B / unit: the least over reps (cluster-wide); disturbed: "
        "another session or process was seen working during the trial"
    )
    aims = check_aims(trials)
    print()
    for a in aims:
        print(f"{'MET    ' if a['met'] else 'NOT MET'}  {a['aim']}: {a['detail']}")
    return {"rows": rows, "aims": aims}


def value(trials: list[Trial], label: str, system: str, name: str) -> tuple[float, list[float]]:
    for t in trials:
        if t.label == label and t.system == system and t.results:
            vals = [r["metrics"][name] for r in t.results if name in r["metrics"]]
            if vals:
                return med(vals), vals
    return float("nan"), []


def check_aims(trials: list[Trial]) -> list[dict[str, Any]]:
    aims: list[dict[str, Any]] = []

    def aim(text: str, ok: bool, detail: str) -> None:
        aims.append({"aim": text, "met": bool(ok), "detail": detail})

    def have(*vs: float) -> bool:
        return all(v == v for v in vs)

    p, _ = value(trials, "W1 N=100", PROMISSORY, "steps/s")
    d, _ = value(trials, "W1 N=100", DBOS, "steps/s")
    c, _ = value(trials, "W1 N=100", PG1, "steps/s")
    if have(p, d):
        aim("W1(100) ≥ 5× DBOS's steps/s", p >= 5 * d, f"{p:,.0f} vs {d:,.0f} = {p / d:.2f}×")
    if have(p, c):
        aim(
            "W1(100) within 3× the one-commit-per-step ceiling (pg-1)",
            p >= c / 3,
            f"{p:,.0f} vs {c:,.0f} steps/s = {p / c:.2f} of it (aim ≥ 0.33)",
        )
    cost, costs = value(trials, "W1 N=100", PROMISSORY_OTEL, "tracing cost")
    cpu, _ = value(trials, "W1 N=100", PROMISSORY_OTEL, "tracing CPU")
    if have(cost):
        aim(
            "W1(100) with OpenTelemetry tracing (in-memory exporter): < 10 % more time per step",
            cost < 10,
            f"{cost:+.1f} % (median over reps of each rep's median over traced/untraced pairs; "
            "reps: "
            + ", ".join(f"{c:+.1f}" for c in costs)
            + (f"; the process's CPU per step: {cpu:+.1f} %)" if have(cpu) else ")"),
        )
    for m in (100,):
        p, _ = value(trials, f"W2 {m}×10", PROMISSORY, "steps/s")
        k, _ = value(trials, f"W2 {m}×10", PYKKA, "steps/s")
        if have(p, k):
            aim(
                f"W2 {m}×10 ≥ ⅓ of pykka's rate",
                p >= k / 3,
                f"{p:,.0f} vs {k:,.0f} steps/s = {p / k:.4f} of it (aim ≥ 0.33)",
            )
    lab = "W3 kill@900/1000"
    o, _ = value(trials, lab, PROMISSORY, "open→running")
    rp, _ = value(trials, lab, PROMISSORY, "replay")
    rd, _ = value(trials, lab, DBOS, "replay")
    od, _ = value(trials, lab, DBOS, "open→running")
    if have(o):
        aim("W3 runtime start → message running again < 100 ms", o < 100, f"{o:.1f} ms")
    if have(o, od):
        aim(
            "W3 resume (runtime start / launch → first new step) ≥ 50× faster than DBOS's",
            od >= 50 * o,
            f"promissory {o:.1f} ms vs DBOS {od:.0f} ms = {od / o:.0f}×",
        )
    if have(rp, rd):
        aim(
            "W3 replay of the 900 kept steps ≥ 50× faster than DBOS's",
            rd >= 50 * rp,
            f"promissory {rp:.1f} ms (journal read + handler replay) vs DBOS {rd:.0f} ms "
            f"(workflow re-entered → first new step) = {rd / rp:.0f}×",
        )
    w4 = sorted(
        (int(t.label.split()[1].replace(",", "")), t)
        for t in trials
        if t.workload == "W4" and t.system == PROMISSORY
    )
    if w4:
        threads = [
            (n, value(trials, t.label, PROMISSORY, "threads")[0]) for n, t in w4 if t.results
        ]
        missing = [f"{n:,}: no figure" for n, t in w4 if not t.results]
        if threads:
            flat = max(v for _, v in threads) - min(v for _, v in threads) <= 4
            aim(
                "W4 threads flat as waiters grow",
                flat and not missing,
                ", ".join([f"{n:,}: {v:.0f}" for n, v in threads] + missing),
            )
        n, t = w4[-1]
        why = t.failures[0]["why"] if t.failures and not t.results else ""
        kb, _ = value(trials, t.label, PROMISSORY, "KB/waiter")
        rss, _ = value(trials, t.label, PROMISSORY, "RSS")
        aim(
            f"W4 memory per waiter < 10 KB (at {n:,})",
            have(kb) and kb < 10,
            f"{kb:.2f} KB" if have(kb) else f"no figure ({why})",
        )
        if n >= 10000:
            aim(
                f"W4 process RSS < 300 MB at {n:,}",
                have(rss) and rss < 300,
                f"{rss:.0f} MB" if have(rss) else f"no figure ({why})",
            )
    for t in trials:
        if t.workload == "W5" and t.system == PROMISSORY and t.call.endswith("w5_fan"):
            iso = sum(r["isolated"] for r in t.results)
            checked = sum(r["checked"] for r in t.results)
            if checked:
                aim(
                    "W5 the 9 siblings of the crashing child unaffected",
                    iso == checked,
                    f"{iso}/{checked} fan-outs: each sibling handled its message once",
                )
    for lab in ("W7 1 agent × 100 turns", "W7 100 agents × 10 turns"):
        p, _ = value(trials, lab, PROMISSORY, "turns/s")
        d, _ = value(trials, lab, DBOS, "turns/s")
        if have(p, d):
            aim(f"{lab}: ≥ 5× DBOS's rate", p >= 5 * d, f"{p:,.0f} vs {d:,.0f} = {p / d:.2f}×")
    return aims


# -- versions ---------------------------------------------------------------------------------


def versions(admin: str, dbos: bool) -> dict[str, str]:
    import msgspec

    import promissory

    out = {
        "python": sys.version.split()[0],
        "psycopg": f"{psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__})",
        "msgspec": msgspec.__version__,
        "pykka": _dist_version("pykka"),
        "promissory": os.path.dirname(promissory.__file__),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {_cpu_model()}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
    }
    with contextlib.suppress(Exception):
        root = os.path.dirname(HERE)
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "promissory"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        out["commit"] = head + (" (promissory/ modified)" if dirty else "")
    if dbos:
        import dbos as dbos_module
        import sqlalchemy

        out["dbos"] = getattr(dbos_module, "__version__", None) or _dist_version("dbos")
        out["sqlalchemy"] = sqlalchemy.__version__
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT version(), current_setting('fsync'), current_setting('synchronous_commit'), "
            "current_setting('shared_buffers'), current_setting('autovacuum')"
        ).fetchone()
    assert row is not None
    out["postgres"] = row[0]
    out["settings"] = (
        f"fsync={row[1]} synchronous_commit={row[2]} shared_buffers={row[3]} autovacuum={row[4]}"
    )
    return out


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


# -- main --------------------------------------------------------------------------------------


def child_main(call: str, args_json: str) -> None:
    module_name, _, fn_name = call.partition(":")
    module = importlib.import_module(module_name)
    args = json.loads(args_json)
    if "imported_at" in args:
        args["imported_at"] = time.monotonic()
    result = getattr(module, fn_name)(**args)
    print(json.dumps(result), flush=True)
    if result.get("_exit"):
        sys.stdout.flush()
        os._exit(0)  # noqa: SLF001 (threads still sleeping: DBOS W4)


def reprint(path: str) -> None:
    """The table and the aims of a saved run (``--json``), recomputed from its trials."""
    with open(path) as f:
        saved = json.load(f)
    for k, v in saved["versions"].items():
        print(f"# {k}: {v}")
    only = sorted({t["workload"] for t in saved["trials"]})
    dbos = any(t["system"].startswith(DBOS) for t in saved["trials"])
    trials = plan(saved["quick"], dbos, only, saved["repeat"])
    by_key = {t["key"]: t for t in saved["trials"]}
    for t in trials:
        old = by_key.get(t.key)
        if old is None:
            continue
        t.results = old["results"]
        t.failures = old.get("failures", [])
        for r in t.results:
            r["metrics"] = t.metrics(r)
    report(None, [t for t in trials if t.results or t.failures])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition (smoke)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions (default 5; quick 1)")
    ap.add_argument("--only", default=",".join(ALL), help="comma-separated workloads: W1,W3…")
    ap.add_argument("--json", help="also write every trial's figures to this file")
    ap.add_argument("--dsn", default=os.environ.get("PROMISSORY_DSN", DEFAULT_DSN))
    ap.add_argument(
        "--settle", type=float, default=None, help="pause before reading counters (0.5 s)"
    )
    ap.add_argument("--no-dbos", action="store_true", help="leave DBOS out even if installed")
    ap.add_argument(
        "--any-settings",
        action="store_true",
        help="run even if the server has fsync or synchronous_commit off",
    )
    ap.add_argument(
        "--from-json", metavar="FILE", help="print the table of an earlier run's --json file"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.args or "{}")
        return
    repeat = args.repeat or (1 if args.quick else 5)
    if args.settle is None:
        args.settle = 0.25 if args.quick else 0.5
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in only if w not in ALL]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; known: {', '.join(ALL)}")

    if args.from_json:
        reprint(args.from_json)
        return
    dbos = False
    if not args.no_dbos:
        if importlib.util.find_spec("dbos") is None:
            print("# DBOS is not installed (pip install -e '.[bench]'): its column is skipped")
        else:
            dbos = True
    started = time.monotonic()
    info = versions(args.dsn, dbos)
    for k, v in info.items():
        print(f"# {k}: {v}")
    if not args.any_settings and (
        "fsync=on" not in info["settings"] or "synchronous_commit=on" not in info["settings"]
    ):
        raise SystemExit(
            "the server runs with fsync or synchronous_commit off, so commits cost what they "
            "would not in production and the figures do not compare; turn them on, or pass "
            "--any-settings to measure anyway"
        )
    trials = plan(args.quick, dbos, only, repeat)
    bench = Bench(args)
    print(
        f"# databases {bench.db}"
        + (f" and {bench.dbos_db}" if dbos else "")
        + f"; {repeat} repetition(s) of {len(trials)} trials, interleaved",
        flush=True,
    )
    bench.setup(dbos)
    try:
        systems = sorted({t.system for t in trials})
        calibrated = [s for s in systems if s in (PROMISSORY, DBOS)]
        hold = 1.0 if args.quick else 3.0
        bench.calibrate(calibrated, (0.0, hold) if args.quick else (0.0, hold, 0.0))
        for rep in range(repeat):
            # a trial that hung is not run again: one timeout says what there is to say
            todo = [
                t
                for t in trials
                if rep < t.reps and not any("timed out" in f["why"] for f in t.failures)
            ]
            k = rep % max(1, len(todo))
            for t in todo[k:] + todo[:k]:
                bench.run(t, rep)
        if repeat > 1:  # once more at the end: the least of both is the systems' own
            bench.calibrate(calibrated, (0.0, hold))
        for t in trials:  # net of the idle cost as finally calibrated
            for r in t.results:
                r["net"] = bench.net(t.system, r)
        summary = report(bench, trials)
        took = time.monotonic() - started
        print(f"\n# {took / 60:.1f} min")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "versions": info,
                        "repeat": repeat,
                        "quick": args.quick,
                        "seconds": took,
                        "idle": bench.idle,
                        "calibration": bench.calibration,
                        "summary": summary,
                        "trials": [
                            {
                                "key": t.key,
                                "workload": t.workload,
                                "label": t.label,
                                "system": t.system,
                                "call": t.call,
                                "args": t.args,
                                "results": t.results,
                                "failures": t.failures,
                            }
                            for t in trials
                        ],
                    },
                    f,
                    indent=1,
                    default=str,
                )
    finally:
        bench.teardown()


if __name__ == "__main__":
    main()
