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
    assert report.in_step_kills == 0  # no tool is declared at_most_once
    assert report.runs >= 1 + 2 * report.boundaries


@pytest.mark.timeout(300)
def test_a_function_model_plugs_in_directly(dsn: str, tmp_path: Path) -> None:
    report = suite(
        dsn, tmp_path, scenarios.functional, random_kills=2, check_idempotency=("charge",)
    ).run()
    assert report.outcome == "done: charged 3"
    assert report.boundaries == 3  # two model turns, one tool step


@pytest.mark.timeout(300)
def test_a_tool_that_ignores_its_idempotency_key_is_named(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(CrashFailure, match="tool:sloppy_charge records its effect"):
        suite(
            dsn, tmp_path, scenarios.sloppy, random_kills=0, check_idempotency=("sloppy_charge",)
        ).run()


@pytest.mark.timeout(300)
def test_an_at_most_once_tool_that_would_run_twice_is_named(dsn: str, tmp_path: Path) -> None:
    # No random kills: the suite kills inside the tool's step on purpose, and names it.
    with pytest.raises(CrashFailure) as failure:
        suite(dsn, tmp_path, scenarios.launching, random_kills=0).run()
    message = str(failure.value)
    assert "tool:launch is declared at_most_once, but step runs/launch/2 ran 2 times" in message
    where = "at step.started #2 at runs/launch/2 (step tool:launch, started, not kept)"
    assert f"after a crash {where}" in message


@pytest.mark.timeout(300)
def test_a_divergence_names_the_boundary_and_shows_both_transcripts(
    dsn: str, tmp_path: Path
) -> None:
    with pytest.raises(CrashFailure) as failure:
        suite(dsn, tmp_path, scenarios.unfixed, random_kills=0).run()
    message = str(failure.value)
    lines = message.splitlines()
    assert lines[0].startswith("after a crash at step.kept #1 at runs/unfixed-"), lines[0]
    assert lines[0].endswith(
        "/1 (step model:unfixed), the run differs from the one without the crash:"
    )
    header = next(line for line in lines if "without the crash" in line and "| with it" in line)
    assert header.startswith("  without the crash")
    # The run started again under a new id: its rows are marked, each side in its column.
    marked = [line for line in lines if line.startswith("! ")]
    assert marked, message
    assert any(line.split("|")[1].strip().startswith("runs/unfixed-") for line in marked)


@pytest.mark.timeout(300)
def test_hidden_nondeterminism_is_caught_by_the_replay_check(dsn: str, tmp_path: Path) -> None:
    # The dice come up differently in the run and in its replay from the journal.
    with pytest.raises(CrashFailure, match="replays differently from its journal"):
        suite(dsn, tmp_path, scenarios.dice, random_kills=0, max_boundaries=0).run()
