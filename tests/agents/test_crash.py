"""Crash tests of an agent run: SIGKILL at every step boundary, at named points, at random.

The scenario (``tests.agents.scenarios:research``) runs a lead agent with tools and two
sub-agents in a child process. Each case kills the child once (at a crash point or after a
random delay) and runs it again to the end, on a fresh schema. Then the resumed run's result
and transcript (every promise under the run's id, with its value) equal the crash-free run's,
and each model call and tool call ran exactly as often as in the crash-free run, except those
whose effect ran in the killed process while their step was not yet kept: once more each,
under the same step id (the idempotency key).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from promissory.testing import CrashTest, Run, fresh_schema, kept_steps

SCENARIO = "tests.agents.scenarios:research"

KEPT_STEPS = 12
"""Model and tool steps of a crash-free run (lead 3 + 3, researcher 2 + 1, critic 2 + 1)."""
EFFECTS = 12
"""Effects of a crash-free run: 7 model calls, 3 lookups, 2 tallies."""


@dataclass(frozen=True)
class Clean:
    outcome: Any
    effects: Counter[tuple[str, str]]
    seconds: float


@pytest.fixture(scope="module")
def clean(server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Clean:
    """The crash-free run, for every case to compare with."""
    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, SCENARIO, workdir=tmp_path_factory.mktemp("clean"))
        run = test.run()
        assert not run.killed
        effects = test.effects()
        assert set(effects.values()) == {1}
        return Clean(run.outcome, effects, run.seconds)


def step_of(key: str) -> str:
    """The step id an effect's key names (a model effect's key is ``agent:turn|step``)."""
    return key.rpartition("|")[2]


def crash_and_resume(server_dsn: str, workdir: Path, clean: Clean, **kill: Any) -> Run:
    """Kill the scenario once as ``kill`` says, resume it, and check it against ``clean``."""
    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, SCENARIO, workdir=workdir)
        killed = test.run(**kill)
        expected = Counter(clean.effects)
        if killed.killed:
            kept = kept_steps(dsn)
            for (name, key), n in test.effects().items():
                if step_of(key) in kept:
                    assert n == 1, f"{name} {key} ran {n} times before it was kept"
                else:
                    expected[(name, key)] += n  # ran, not kept: it runs again on resume
        final = test.run()
        assert not final.killed
        got, want = dict(final.outcome), dict(clean.outcome)
        # Compared apart, in test_regressions.py: whether the finished runs' actors ended.
        got.pop("statuses"), want.pop("statuses")
        assert got == want, "the resumed run differs from the crash-free run"
        assert test.effects() == expected, (
            f"effects differ from the crash-free run's\n{_diff(test.effects(), clean.effects)}"
        )
        if killed.killed and kill.get("crash_at", "").startswith("effect.ran"):
            # The effect that was running when the process died ran once more, under the same
            # step id (its idempotency key).
            assert killed.crash_point is not None
            name, _, key = killed.crash_point.split(" at ", 1)[1].partition(":")
            assert test.effects()[(name, key)] == 2, killed.crash_point
        return killed


def _diff(got: Counter[tuple[str, str]], clean: Counter[tuple[str, str]]) -> str:
    keys = sorted(set(got) | set(clean))
    return "\n".join(f"  {k}: {clean[k]} -> {got[k]}" for k in keys if got[k] != clean[k])


def test_the_crash_free_run(clean: Clean) -> None:
    outcome = clean.outcome
    assert outcome["output"] == "Durable agents keep promises; the numbers add up."
    assert outcome["details"]["turns"] == 3
    assert outcome["details"]["usage"]["requests"] == 7
    steps = [s for s in outcome["transcript"] if (s["fingerprint"] or "").startswith("step:")]
    assert len(steps) == KEPT_STEPS
    assert sum(clean.effects.values()) == EFFECTS
    assert sorted(k for k, _ in clean.effects) == ["lookup"] * 3 + ["model"] * 7 + ["tally"] * 2
    # Two sub-agents ran as children of the run's actor; every run ended its actor.
    assert outcome["actors"] == [
        # Each run is kept under its agent's type: only a node that defines it hosts it.
        ["agent/run/crash", None, "agent:crash_lead"],
        ["agent/run/crash/t1-1-researcher", "agent/run/crash", "agent:crash_researcher"],
        ["agent/run/crash/t2-0-critic", "agent/run/crash", "agent:crash_critic"],
    ]
    assert set(outcome["statuses"].values()) == {"stopped"}


def test_every_step_boundary_is_counted(server_dsn: str, tmp_path: Path, clean: Clean) -> None:
    # One kept step more than a clean run has is never reached: the cases below cover all.
    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, SCENARIO, workdir=tmp_path)
        run = test.run(crash_at=f"step.kept:{KEPT_STEPS + 1}")
        assert not run.killed
        assert run.outcome == clean.outcome


STEP_KEPT = [("step.kept", n) for n in range(1, KEPT_STEPS + 1)]
NAMED = [
    ("effect.ran", 1),
    ("effect.ran", 4),
    ("effect.ran", 8),
    ("effect.ran", 12),
    ("message.committed", 1),
    ("message.committed", 2),
    ("message.committed", 3),
    ("handler.returned", 3),
    ("message.settled", 3),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("point", "n"), STEP_KEPT + NAMED, ids=[f"{p}-{n}" for p, n in STEP_KEPT + NAMED]
)
def test_a_kill_at_a_boundary_changes_nothing(
    server_dsn: str, tmp_path: Path, clean: Clean, point: str, n: int
) -> None:
    killed = crash_and_resume(server_dsn, tmp_path, clean, crash_at=f"{point}:{n}")
    assert killed.killed, f"the run never reached {point} #{n}"
    assert killed.crash_point is not None and killed.crash_point.startswith(f"{point} #{n} ")


RANDOM_KILLS = 10


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", range(RANDOM_KILLS))
def test_a_kill_at_a_random_moment_changes_nothing(
    server_dsn: str, tmp_path: Path, clean: Clean, case: int
) -> None:
    rng = random.Random(f"agents-{case}")
    # From process start-up (imports, recovery) to the end of a crash-free run.
    delay = rng.uniform(0.15, clean.seconds)
    crash_and_resume(server_dsn, tmp_path, clean, kill_after=delay)
