"""Crash tests: a child process is killed with SIGKILL at named points and at random moments.

After every kill the scenario runs again, to completion, and then: every message was handled
and its reply equals that of a run without crashes; the actors' state snapshots equal the
crash-free run's; and no kept step ran again: every effect that ran after a kill belongs to a
step that was not kept when the process died (each effect is keyed by its step's id).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promissory.testing import CrashTest, kept_steps, reset_schema
from tests.actors.kit import clean_run

SCENARIO = "tests.actors.scenarios:multi_step"

# (point, occurrence): after a message is committed and before it is handled; just before a
# step's function runs; while a step's effect is running; after a step is kept and before
# the next; after the handler returns and before the settle commits; after a settle.
NAMED = [
    ("message.committed", 3),
    ("message.committed", 9),
    ("step.started", 4),
    ("step.started", 30),
    ("effect.ran", 2),
    ("effect.ran", 25),
    ("step.kept", 1),
    ("step.kept", 17),
    ("step.kept", 44),
    ("handler.returned", 2),
    ("handler.returned", 9),
    ("message.settled", 5),
]


@pytest.fixture(scope="module")
def clean(server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The outcome of a run without crashes, for every crash test to compare with."""
    return clean_run(server_dsn, SCENARIO, tmp_path_factory.mktemp("clean"))


class Tracker:
    """Runs a scenario through kills and checks, after each restart, that kept steps stayed kept."""

    def __init__(self, dsn: str, workdir: Path) -> None:
        self.dsn = dsn
        self.test = CrashTest(dsn, SCENARIO, workdir=workdir)
        self.kept_at_kill: set[str] = set()
        self.kills = 0

    def run(self, **kill: Any) -> Any:
        before: Counter[tuple[str, str]] = self.test.effects()
        run = self.test.run(**kill)
        ran = self.test.effects() - before
        again = {key for (_, key) in ran} & self.kept_at_kill
        assert not again, f"kept steps ran again after a kill: {sorted(again)}"
        if run.killed:
            self.kills += 1
            self.kept_at_kill = kept_steps(self.dsn)
        return run


def check_final(tracker: Tracker, outcome: Any, clean: dict[str, Any]) -> None:
    assert outcome == clean["outcome"]
    assert set(tracker.test.effects()) == clean["effects"], "every effect ran, and no other"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("point", "n"), NAMED, ids=[f"{p}-{n}" for p, n in NAMED])
def test_a_kill_at_a_named_point_leaves_every_reply_and_state_as_without_it(
    dsn: str, tmp_path: Path, clean: dict[str, Any], point: str, n: int
) -> None:
    tracker = Tracker(dsn, tmp_path)
    killed = tracker.run(crash_at=f"{point}:{n}")
    assert killed.killed, f"the run never reached {point} #{n}"
    assert killed.crash_point is not None and killed.crash_point.startswith(f"{point} #{n}")
    final = tracker.run()
    assert not final.killed
    check_final(tracker, final.outcome, clean)
    if point == "effect.ran":
        # The step whose function was running when the process died ran once more, with
        # the same step id (its idempotency key).
        key = killed.crash_point.split(" at work:", 1)[1]
        assert tracker.test.effects()[("work", key)] == 2


@pytest.mark.timeout(600)
def test_fifty_random_kills_leave_every_reply_and_state_as_without_them(
    dsn: str, tmp_path: Path, clean: dict[str, Any]
) -> None:
    rng = random.Random(20261126)
    kills = workloads = 0
    while kills < 50:
        workloads += 1
        _reset(dsn)
        tracker = Tracker(dsn, tmp_path / f"workload-{workloads}")
        while True:
            # Anywhere from process start-up (imports, recovery) to the end of a typical run.
            run = tracker.run(kill_after=rng.uniform(0.2, 1.0))
            if not run.killed:
                break
        kills += tracker.kills
        check_final(tracker, run.outcome, clean)


def _reset(dsn: str) -> None:
    reset_schema(dsn)  # every promissory table and function, the protocol's too


def test_a_backoff_survives_a_sigkill_and_does_not_start_over(dsn: str, tmp_path: Path) -> None:
    """Killed right after the first failed attempt is kept (with the time of the next), the
    restarted process waits out what is left of that backoff and goes on with attempt 2: the
    attempt count and the next attempt's time come from the step's row, not from zero."""
    from tests.actors.scenarios import BACKOFF

    test = CrashTest(dsn, "tests.actors.scenarios:retrying", workdir=tmp_path)
    killed = test.run(crash_at="step.kept:1")
    assert killed.killed
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state, attempt, next_attempt_at - created_at, "
            "extract(epoch FROM next_attempt_at) FROM promises WHERE id = 'calls/0/1'"
        ).fetchone()
    assert row is not None
    state, attempt, wait, next_at = row
    assert (state, attempt) == ("pending", 1)
    assert abs(wait.total_seconds() - BACKOFF) < 0.1, wait

    finished = test.run()
    assert not finished.killed
    assert finished.outcome == {"reply": "ok at attempt 3"}
    # Each attempt ran once, across both processes: 1 before the kill, 2 and 3 after.
    attempts = sorted(key for (name, key), n in test.effects().items() if name == "attempt")
    assert attempts == ["calls/0/1#1", "calls/0/1#2", "calls/0/1#3"]
    assert set(test.effects().values()) == {1}
    at = dict(
        key.split("@") for (name, key) in test.effects() if name == "attempt-at"
    )  # attempt -> wall time it started
    # Attempt 2 waited for the kept time, though the new process started before it.
    assert float(at["2"]) >= float(next_at) - 0.05, (at, next_at)
    with psycopg.connect(dsn, autocommit=True) as conn:
        final = conn.execute(
            "SELECT state, attempt, extract(epoch FROM settled_at) FROM promises "
            "WHERE id = 'calls/0/1'"
        ).fetchone()
    assert final is not None and final[:2] == ("resolved", 3)
    # Attempt 2 did not run before the kept time; attempt 3 came a further 2 × BACKOFF later.
    assert float(final[2]) >= float(next_at) + 2 * BACKOFF - 0.05
