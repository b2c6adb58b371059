"""SIGKILL around a run's early first call (``promissory.agents._early``): killed once the run
is kept (the call made, its answer not yet kept), or before its commit, the run started again
ends as an uninterrupted one, its first step kept once; the call lost with the process is
made again, by the resumed run."""

from __future__ import annotations

from pathlib import Path

import pytest

from promissory.testing import CrashTest, fresh_schema
from tests.agents.fake_llm import FakeProvider, openai_stream

SCENARIO = "tests.agents.early_app:run"
CLEAN = {"output": "Hello", "steps": [["early/crash/1", "resolved"]]}


def served(fake: FakeProvider, times: int) -> None:
    for _ in range(times):
        fake.answer_stream(openai_stream(["Hel", "lo"]), delay=0.05)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("crash_at", ["message.committed:1", "step.started:1"])
def test_a_run_killed_after_its_early_call_began_ends_as_an_uninterrupted_one(
    server_dsn: str,
    tmp_path: Path,
    fake: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    crash_at: str,
) -> None:
    monkeypatch.setenv("EARLY_PROVIDER", fake.openai_url)
    served(fake, 4)
    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, SCENARIO, workdir=tmp_path)
        killed = test.run(crash_at=crash_at)
        assert killed.killed, killed.stderr
        # The killed process asked the model once at most (its early call), before any
        # answer of it was kept.
        before = len(fake.requests)
        assert before <= 1
        final = test.run()
        assert not final.killed, final.stderr
        assert final.outcome == CLEAN
        # The resumed run asked once, for the turn the killed one did not keep.
        assert len(fake.requests) == before + 1


@pytest.mark.timeout(120)
def test_a_clean_run_asks_once(
    server_dsn: str, tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EARLY_PROVIDER", fake.openai_url)
    served(fake, 2)
    with fresh_schema(server_dsn) as dsn:
        run = CrashTest(dsn, SCENARIO, workdir=tmp_path).run()
        assert not run.killed, run.stderr
        assert run.outcome == CLEAN
        assert len(fake.requests) == 1


@pytest.mark.timeout(120)
def test_a_connection_dropped_inside_the_runs_commit_after_the_early_call_began(
    server_dsn: str, tmp_path: Path, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer cuts its connection once the run's COMMIT is sent (the early call was asked
    # on the statement's answer, before): it finds out the run was kept, and the run ends as
    # an uninterrupted one, its first step kept once.
    monkeypatch.setenv("EARLY_PROVIDER", fake.openai_url)
    served(fake, 3)
    with fresh_schema(server_dsn) as dsn:
        run = CrashTest(dsn, SCENARIO, workdir=tmp_path).run(drop_at="spawn:1")
        assert run.dropped is not None, run.stderr
        assert not run.killed, run.stderr
        assert run.outcome == CLEAN
        assert len(fake.requests) <= 2  # the early call, and a new one if it was cut
