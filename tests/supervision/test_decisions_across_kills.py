"""A supervisor's decision is applied once, whatever kill cuts it off (issue 13, items 15, 16):
killed after a child's revival or bounce committed and before the step that did it was kept,
the next start neither revives it again (a restart counted twice, a running incarnation cut
off mid-step) nor lets recovery run a child its supervisor is about to restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from promissory.testing import CrashTest
from promissory.testing._effects import read_effects
from promissory.testing._suite import reset_schema

SCENARIOS = "tests.supervision.decisions"


def run_clean_then_killed(dsn: str, tmp_path: Path, scenario: str, crash_at: str) -> None:
    clean_test = CrashTest(dsn, f"{SCENARIOS}:{scenario}", workdir=tmp_path / "clean")
    clean = clean_test.run()
    assert not clean.killed and clean.outcome is not None, clean.stderr
    reset_schema(dsn)
    test = CrashTest(dsn, f"{SCENARIOS}:{scenario}", workdir=tmp_path / "killed")
    killed = test.run(crash_at=crash_at)
    assert killed.killed and killed.crash_point is not None, killed.stderr
    final = test.run_to_completion()
    assert final.outcome == clean.outcome
    # Every job's effect ran once, across both processes.
    effects = read_effects(test.effects_file)
    assert {k: v for k, v in effects.items() if v != 1} == {}, effects


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n", [1])
def test_a_one_for_one_revive_cut_off_by_a_kill_is_not_applied_twice(
    dsn: str, tmp_path: Path, n: int
) -> None:
    run_clean_then_killed(dsn, tmp_path, "one_for_one_restart", f"actor.revived:{n}")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["actor.bounced:1", "actor.revived:1", "actor.revived:2"])
def test_a_rest_for_one_restart_cut_off_by_a_kill_runs_no_job_twice(
    dsn: str, tmp_path: Path, point: str
) -> None:
    run_clean_then_killed(dsn, tmp_path, "rest_for_one_restart", point)
