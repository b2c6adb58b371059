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

from promissory.testing import CrashTest

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
    from tests.conftest import fresh_schema

    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, SCENARIO, workdir=tmp_path_factory.mktemp("clean"))
        run = test.run()
        assert not run.killed
        assert set(test.effects().values()) == {1}
        return {"outcome": run.outcome, "effects": set(test.effects())}


def kept_steps(dsn: str) -> set[str]:
    """The ids of the steps kept (settled) in the store right now."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('promises')").fetchone()
        if exists is None or exists[0] is None:
            return set()  # killed before the schema was made
        rows = conn.execute(
            "SELECT id FROM promises WHERE kind = 'step' AND state <> 'pending'"
        ).fetchall()
    return {r[0] for r in rows}


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
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS promises, actors, nodes, promissory_migrations CASCADE")
        functions = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'promissory%%'"
        ).fetchall()
        for (name,) in functions:
            conn.execute(f'DROP FUNCTION IF EXISTS "{name}"() CASCADE')
