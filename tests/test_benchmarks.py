"""The benchmark suite keeps working: ``benchmarks/run.py --quick --only W1`` prints its table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``benchmarks/<name>`` with ``args``; its output, once it has exited cleanly."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(120)
def test_quick_w1_prints_a_table(server_dsn: str) -> None:
    out = run_script("run.py", "--quick", "--only", "W1", "--dsn", server_dsn)
    assert "| workload | figure | system | median |" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| W1 N=")]
    systems = {line.split("|")[3].strip() for line in rows}
    assert {"promissory", "pg-1", "pg-batch", "pykka"} <= systems, rows
    assert any(line.startswith("| W1 N=100 | steps/s | promissory |") for line in rows), rows
    assert "W1(100) within 3× the one-commit-per-step ceiling" in out, out


@pytest.mark.timeout(120)
def test_message_cpu_prints_cpu_and_switches_by_thread(server_dsn: str) -> None:
    # A small supervisor (40 children) and three rounds: the table still names every kind of
    # thread that works for a message.
    out = run_script(
        "message_cpu.py",
        "--rounds",
        "3",
        "--dsn",
        server_dsn,
        env={"PROMISSORY_BENCH_CHILDREN": "40"},
    )
    assert "rounds 3–3, median:" in out and "writes per batch" in out, out
    kinds = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
    assert {"senders", "the children (actors)", "writer", "all"} <= kinds, out
