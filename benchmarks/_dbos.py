"""DBOS's side of the suite (``pip install -e '.[bench]'``): the same workloads as workflows.

DBOS is configured as in ../shared/reference/anchors.md: ``{"name", "system_database_url",
"log_level": "WARNING", "application_version"}``, everything else default (pool size 20,
pre-ping on). It gets a database of its own on the same server. Each trial returns the same
dict as ``_promissory``'s trials.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from _common import proc_status
from dbos import DBOS, DBOSConfig, SetWorkflowID

VERSION = "promissory-bench"
MARKS: dict[str, float] = {}
KILL_AT = [-1]
FAILED: set[str] = set()
_lock = threading.Lock()


def launch(url: str) -> float:
    """Configure and launch DBOS; return when launching began (monotonic)."""
    config: DBOSConfig = {
        "name": "promissory-bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "application_version": VERSION,
    }
    t0 = time.monotonic()
    DBOS(config=config)
    DBOS.launch()
    return t0


def close(t0: float) -> float:
    DBOS.destroy()
    return time.monotonic() - t0


# -- workflows and steps -------------------------------------------------------------------------


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def steps_wf(n: int) -> int:
    for i in range(n):
        noop(i)
    return n


@DBOS.step()
def live_step(i: int) -> int:
    if i == KILL_AT[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    if "first_live_step" not in MARKS:
        MARKS["first_live_step"] = time.monotonic()
    return i


@DBOS.workflow()
def replay_wf(n: int) -> int:
    if "handler_entered" not in MARKS:
        MARKS["handler_entered"] = time.monotonic()
    for i in range(n):
        live_step(i)
    return n


@DBOS.workflow()
def sleeper_wf(seconds: float) -> None:
    DBOS.sleep(seconds)


@DBOS.workflow()
def probe_wf(k: int) -> int:
    MARKS[f"probe/{k}"] = time.monotonic()
    return k


@DBOS.step(retries_allowed=True, interval_seconds=0.0, max_attempts=3)
def work_step(key: str, i: int, crash: bool) -> int:
    with _lock:
        first = key not in FAILED
        FAILED.add(key)
    if crash and first:
        raise RuntimeError(f"{key} fails once")
    return i


@DBOS.workflow()
def child_wf(key: str, i: int, crash: bool) -> int:
    return work_step(key, i, crash)


@DBOS.workflow()
def fan_wf(key: str, width: int, fail: int) -> list[int]:
    handles = [DBOS.start_workflow(child_wf, f"{key}/{i}", i, i == fail) for i in range(width)]
    return [h.get_result() for h in handles]


@DBOS.step()
def model_step(turn: int, turns: int) -> dict[str, Any]:
    """A zero-latency scripted model: a tool call each turn, then a final answer."""
    if turn >= turns:
        return {"role": "assistant", "content": "done", "stop_reason": "end_turn"}
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": f"call-{turn}", "name": "fetch", "arguments": {"i": turn}}],
        "stop_reason": "tool_calls",
    }


TEXT_SIZE = [0]


@DBOS.step()
def tool_step(i: int) -> str:
    if TEXT_SIZE[0]:
        from _promissory import tool_text

        return tool_text(i, TEXT_SIZE[0])
    return ""


@DBOS.workflow()
def agent_wf(turns: int) -> str:
    transcript: list[Any] = [{"role": "user", "content": "Go."}]
    turn = 0
    while True:
        answer = model_step(turn, turns)
        transcript.append(answer)
        calls = answer.get("tool_calls") or []
        if not calls:
            return str(answer["content"])
        results = [tool_step(c["arguments"]["i"]) for c in calls]
        transcript.append({"role": "tool", "content": results})
        turn += 1


def _one(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# -- trials -------------------------------------------------------------------------------------


def idle(url: str, hold: float) -> dict[str, Any]:
    t0 = launch(url)
    time.sleep(hold)
    return {"samples": [], "units": 0, "steps_total": 0, "hold": close(t0)}


def w1(url: str, n: int, warmup: int, runs: int) -> dict[str, Any]:
    t0 = launch(url)
    for _ in range(warmup):
        steps_wf(n)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        steps_wf(n)
        samples.append(time.perf_counter() - t)
    total = warmup + runs
    return {
        "samples": samples,
        "units": n,
        "steps_total": n * total,
        "messages": total,
        "hold": close(t0),
    }


def concurrent_batches(
    workflow: Callable[[int], Any], arg: int, count: int, warmup: int, batches: int
) -> tuple[list[float], int]:
    """Seconds of each of ``batches`` batches (after ``warmup`` unmeasured ones) of ``count``
    ``workflow(arg)`` started at once from up to 100 client threads, and the peak thread
    count seen."""
    peak = proc_status()["threads"]
    with ThreadPoolExecutor(max_workers=min(count, 100)) as pool:

        def batch() -> float:
            nonlocal peak
            t = time.perf_counter()
            futures = [pool.submit(workflow, arg) for _ in range(count)]
            peak = max(peak, proc_status()["threads"])
            for f in futures:
                f.result()
            return time.perf_counter() - t

        for _ in range(warmup):
            batch()
        return [batch() for _ in range(batches)], peak


def w2(url: str, workflows: int, steps: int, warmup: int, batches: int) -> dict[str, Any]:
    """``workflows`` workflows of ``steps`` steps at once, from up to 100 client threads
    (anchors.md: 100 client threads for 100 workflows; more would only queue on DBOS's pool
    of 20 connections)."""
    t0 = launch(url)
    samples, peak = concurrent_batches(steps_wf, steps, workflows, warmup, batches)
    total = (warmup + batches) * workflows
    return {
        "samples": samples,
        "units": workflows * steps,
        "steps_total": total * steps,
        "messages": total,
        "peak_threads": peak,
        "hold": close(t0),
    }


def w3_crash(url: str, n: int, kill_at: int, run_id: str) -> dict[str, Any]:
    t0 = launch(url)
    KILL_AT[0] = kill_at
    with SetWorkflowID(run_id):
        replay_wf(n)
    return {"samples": [], "units": 0, "steps_total": n, "hold": close(t0), "note": "not killed"}


def w3_restart(url: str, run_id: str, imported_at: float) -> dict[str, Any]:
    t0 = launch(url)  # recovers this executor's PENDING workflows
    launched = time.monotonic()
    value = DBOS.retrieve_workflow(run_id).get_result(polling_interval_sec=0.01)
    done = time.monotonic()
    return {
        "samples": [],
        "units": 0,
        "steps_total": 1,
        "value": value,
        "imported_at": imported_at,
        "open_start": t0,
        "open_end": launched,
        "handler_entered": MARKS.get("handler_entered"),
        "replay_start": MARKS.get("handler_entered"),
        "first_live_step": MARKS.get("first_live_step"),
        "done": done,
        "hold": close(t0),
    }


def w4(url: str, waiters: int, seconds: float) -> dict[str, Any]:
    """``waiters`` workflows each in ``DBOS.sleep(seconds)``: resident memory and threads.
    (DBOS keeps a thread per sleeping workflow.) The process exits without waiting for
    them (``os._exit`` after printing, in the caller)."""
    t0 = launch(url)
    warm = max(20, waiters // 20)

    def park(count: int) -> float:
        t = time.perf_counter()
        for _ in range(count):
            DBOS.start_workflow(sleeper_wf, seconds)
        # wait until every sleeper has recorded its sleep (it then blocks in time.sleep)
        deadline = time.monotonic() + 600
        want = parked[0] + count
        while time.monotonic() < deadline:
            got = _one(
                url,
                "SELECT count(*) FROM dbos.operation_outputs WHERE function_name = 'DBOS.sleep'",
            )
            if got >= want:
                break
            time.sleep(0.1)
        parked[0] = want
        time.sleep(0.5)
        return time.perf_counter() - t

    parked = [0]
    park(warm)
    base = proc_status()
    park_seconds = park(waiters)
    after = proc_status()
    return {
        "samples": [(after["rss"] - base["rss"]) / waiters],
        "units": waiters,
        "steps_total": waiters,
        "rss_base": base["rss"],
        "rss_after": after["rss"],
        "threads_base": base["threads"],
        "threads_after": after["threads"],
        "peak_threads": after["threads"],
        "park_seconds": park_seconds,
        "hold": time.monotonic() - t0,
        "_exit": True,
    }


def w5_fan(url: str, width: int, warmup: int, runs: int) -> dict[str, Any]:
    """A workflow starting ``width`` child workflows of one step each and gathering them; one
    child's step fails once and DBOS retries it (``retries_allowed``, no wait): DBOS's nearest
    thing to a restarted child. Alternates with a fan-out in which nothing fails."""
    t0 = launch(url)
    fail_s: list[float] = []
    ok_s: list[float] = []
    for k in range(warmup + runs):
        for failing in (True, False):
            t = time.perf_counter()
            value = fan_wf(f"w5/{k}/{failing}", width, 3 if failing else -1)
            took = time.perf_counter() - t
            assert value == list(range(width)), value
            if k >= warmup:
                (fail_s if failing else ok_s).append(took)
    return {
        "samples": fail_s,
        "units": width,
        "steps_total": 0,
        "ok_samples": ok_s,
        "messages": 2 * (warmup + runs),
        "hold": close(t0),
    }


def w6(url: str, queued: bool, samples: int) -> dict[str, Any]:
    """``DBOS.start_workflow`` (or, ``queued``, ``Queue.enqueue`` with the default 1 s poll)
    to the workflow body starting."""
    t0 = launch(url)
    queue = DBOS.register_queue("w6q") if queued else None
    lat = []
    for k in range(samples + 2):
        time.sleep(0.01)
        t = time.monotonic()
        if queue is not None:
            handle = queue.enqueue(probe_wf, k)
        else:
            handle = DBOS.start_workflow(probe_wf, k)
        handle.get_result(polling_interval_sec=0.01)
        if k >= 2:
            lat.append(MARKS[f"probe/{k}"] - t)
    return {
        "samples": lat,
        "units": 1,
        "steps_total": 0,
        "messages": samples + 2,
        "hold": close(t0),
    }


def w7_turns(url: str, agents: int, turns: int, warmup: int, batches: int) -> dict[str, Any]:
    """The agent loop's steps as a DBOS workflow: per turn a model step (a scripted answer
    with one tool call) and a tool step (an empty string); ``agents`` at once (threads)."""
    t0 = launch(url)
    samples, _ = concurrent_batches(agent_wf, turns, agents, warmup, batches)
    total = (warmup + batches) * agents
    return {
        "samples": samples,
        "units": agents * (turns + 1),
        "steps_total": total * (2 * turns + 1),
        "runs": total,
        "hold": close(t0),
    }


def w7_storage(url: str, turns: int, text_size: int) -> dict[str, Any]:
    """The 100-turn agent with a ``text_size`` tool output as a DBOS workflow: the bytes its
    run adds to DBOS's tables."""
    t0 = launch(url)
    TEXT_SIZE[0] = text_size
    size_q = (
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'dbos' AND c.relkind = 'r'"
    )

    def size() -> int:
        return _one(url, size_q)

    before = size()
    t = time.perf_counter()
    agent_wf(turns)
    took = time.perf_counter() - t
    after = size()
    return {
        "samples": [float(after - before)],
        "units": 1,
        "steps_total": 2 * turns + 1,
        "seconds": took,
        "table_bytes": after - before,
        "hold": close(t0),
    }
