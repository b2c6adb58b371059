"""What a full crash test of a 20-step agent costs: every step boundary plus 10 random kills.

The scenario is an agent of exactly 20 steps (10 model turns and 10 tool calls, see ``SCRIPT``)
with a scripted model and an idempotent tool, as a user's own test would have.
``CrashSuite`` runs it once cleanly (plus its replay from the journal alone), then once per
step boundary killed there by SIGKILL in a child process and restarted, then at 10 random
moments, checking after each that the outcome, the transcript and the effects match the clean
run and that nothing is left pending.

The figure is the suite's wall time, median over ``--repeat`` runs with the spread; the aim
(issue 9) is under 60 s on this machine.

Run: ``.venv/bin/python benchmarks/crash_suite_cost.py [--dsn DSN] [--repeat 3] [--json F]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory import Runtime, current_step
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply, tool
from promissory.testing import CrashSuite, effect

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
STEPS = 20
RANDOM_KILLS = 10


@tool(effect="idempotent")
def lookup(topic: str) -> str:
    """Look ``topic`` up (an effect keyed by the step's idempotency key)."""
    step = current_step()
    assert step is not None
    effect("lookup", step.idempotency_key)
    return f"notes on {topic} " * 20


SCRIPT: list[Any] = [
    reply("", call("lookup", "c0a", topic="t0a"), call("lookup", "c0b", topic="t0b")),
    *[reply("", call("lookup", f"c{i}", topic=f"t{i}")) for i in range(1, 9)],
    "done: ten lookups",
]
"""Ten model turns: the first asks for two lookups at once, the next eight for one each, the
last answers. The journal keeps 10 model steps and 10 tool steps: 20 in all."""

AGENT = Agent("costed", "Look things up.", ScriptedModel(SCRIPT), tools=[lookup])


def expected_steps() -> int:
    """Kept steps of one run: a model step per turn, a tool step per call."""
    turns = len(SCRIPT)
    calls = sum(len(r.message.tool_calls) for r in SCRIPT if not isinstance(r, str))
    return turns + calls


def scenario(rt: Runtime) -> Any:
    """Start the run (or wait for the one a crash interrupted) and return its output."""
    assert rt.store is not None
    run_id = "runs/costed"
    if rt.store.find(run_id) is None:
        return rt.start(AGENT, "go", id=run_id).result(timeout=60)
    return RunHandle(run_id, rt.store).result(timeout=60)


def _schema_dsn(dsn: str, schema: str) -> str:
    params = conninfo_to_dict(dsn)
    params["options"] = (params.get("options") or "") + f" -csearch_path={schema}"
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", default=os.environ.get("PROMISSORY_DSN", DEFAULT_DSN))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--random-kills", type=int, default=RANDOM_KILLS)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if expected_steps() != STEPS:
        sys.exit(f"the scenario has {expected_steps()} steps, not {STEPS}")
    schema = f"crash_cost_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    dsn = _schema_dsn(args.dsn, schema)
    seconds: list[float] = []
    reports = []
    try:
        for i in range(args.repeat):
            with tempfile.TemporaryDirectory() as work:
                report = CrashSuite(
                    dsn,
                    "crash_suite_cost:scenario",
                    workdir=Path(work),
                    random_kills=args.random_kills,
                    check_idempotency=("lookup",),
                    seed=i,
                ).run()
            if report.boundaries != STEPS:
                sys.exit(f"the suite found {report.boundaries} boundaries, not {STEPS}")
            seconds.append(report.seconds)
            reports.append(
                {"seconds": report.seconds, "runs": report.runs, "boundaries": report.boundaries}
            )
            print(
                f"run {i + 1}: {report.boundaries} boundaries + {report.random_kills} random "
                f"kills, {report.runs} child processes, {report.seconds:.1f} s",
                flush=True,
            )
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    median = statistics.median(seconds)
    per_run = median / statistics.median(r["runs"] for r in reports)
    print(
        f"\n{STEPS}-step agent, every boundary + {args.random_kills} random kills: "
        f"median {median:.1f} s (min {min(seconds):.1f}, max {max(seconds):.1f}; "
        f"{per_run:.2f} s per child process); aim < 60 s: {'met' if median < 60 else 'MISSED'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"median_s": median, "runs": reports}, indent=2))


if __name__ == "__main__":
    main()
