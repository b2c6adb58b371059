"""The crash suite on scenarios with known answers: it passes a sound one and names each defect."""

from __future__ import annotations

from pathlib import Path

import pytest

from promissory.testing import CrashFailure, CrashSuite
from tests.testing import scenarios


def suite(dsn: str, tmp_path: Path, scenario: object, **options: object) -> CrashSuite:
    return CrashSuite(dsn, scenario, workdir=tmp_path, **options)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
def test_a_sound_agent_passes_every_boundary_and_random_kills(dsn: str, tmp_path: Path) -> None:
    report = suite(
        dsn, tmp_path, scenarios.sound, random_kills=3, check_idempotency=("charge",)
    ).run()
    assert report.outcome == "done"
    assert report.boundaries == 5  # three model turns, two tool steps
    assert report.runs >= 1 + 2 * report.boundaries


@pytest.mark.timeout(300)
def test_a_tool_that_ignores_its_idempotency_key_is_named(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(CrashFailure, match="tool:sloppy_charge records its effect"):
        suite(
            dsn, tmp_path, scenarios.sloppy, random_kills=0, check_idempotency=("sloppy_charge",)
        ).run()


@pytest.mark.timeout(300)
def test_an_at_most_once_tool_that_would_run_twice_is_named(dsn: str, tmp_path: Path) -> None:
    # Kills at random moments land inside the 0.2 s launch; its step then runs again.
    with pytest.raises(CrashFailure, match="tool:launch is declared at_most_once"):
        suite(dsn, tmp_path, scenarios.launching, random_kills=12, seed=3).run()


@pytest.mark.timeout(300)
def test_hidden_nondeterminism_is_caught_by_the_replay_check(dsn: str, tmp_path: Path) -> None:
    failures = 0
    for seed in range(6):  # the coin flips differ between the run and its replay half the time
        try:
            suite(dsn, tmp_path / str(seed), scenarios.dice, random_kills=0, max_boundaries=0).run()
        except CrashFailure as exc:
            assert "replays differently" in str(exc)
            failures += 1
    assert failures > 0
