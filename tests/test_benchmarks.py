"""The benchmark suite keeps working: ``benchmarks/run.py --quick --only W1`` prints its table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.timeout(120)
def test_quick_w1_prints_a_table(server_dsn: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "run.py"),
            "--quick",
            "--only",
            "W1",
            "--dsn",
            server_dsn,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| workload | figure | system | median |" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| W1 N=")]
    systems = {line.split("|")[3].strip() for line in rows}
    assert {"promissory", "pg-1", "pg-batch", "pykka"} <= systems, rows
    assert any(line.startswith("| W1 N=100 | steps/s | promissory |") for line in rows), rows
    assert "W1(100) within 3× the one-commit-per-step ceiling" in out, out
