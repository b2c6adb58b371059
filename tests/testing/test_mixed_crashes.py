"""The crash suite on a mixed workload (supervision trees, calls between actors, an agent with a
sub-agent and an approval): kills at every step boundary and after every commit of
supervision's bookkeeping, connections cut inside COMMITs of every kind of write, and random
kills with and without a cut; no reply, state, restart count or step count may differ from a
run without them (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promissory.testing import CrashSuite
from tests.testing import mixed


@pytest.mark.timeout(900)
def test_a_mixed_workload_survives_kills_and_connection_cuts_anywhere(
    dsn: str, tmp_path: Path
) -> None:
    report = CrashSuite(
        dsn,
        mixed.mixed,
        workdir=tmp_path,
        random_kills=8,
        random_drops=4,
        max_drops=2,
        timeout=90,
    ).run()
    assert report.outcome == {
        "calls": [[1, "job 1 done"], [3, "job 2 done"], [6, "job 3 done"]],
        "agent": "all done",
    }
    # A supervisor's restart keeps no steps (it is decided in the transaction that settles
    # the exit), so the flaky child's restart adds no boundary; its commits are still killed
    # at (bookkeeping_kills) and cut (drops).
    assert report.boundaries >= 14
    assert report.bookkeeping_kills >= 2  # the flaky child's exit recorded, and its revival
    assert report.drops >= 8
