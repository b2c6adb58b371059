"""A canceled or timed-out agent run leaves a whole transcript, and ``rt.resume`` (or
``promissory resume``) continues it from its last whole turn as a new run whose model requests
and result equal those of a run that was never interrupted, from that turn on.

``RESUMER`` takes four turns; ``HOLD`` makes one run's model call (or slow tool call) of one
turn wait until it is cancelled, so the cancel lands there.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from promissory.agents import Agent, RunResult
from promissory.errors import InvalidInputError, PromiseCanceledError, PromiseTimedOutError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.checks import canceled_answers, canceled_calls, check_canceled
from tests.cancel.kit import NAPPER, RESUMER, eventually, python, requests_of, rows


def clean_run(rt: Runtime, agent: Agent = RESUMER, id: str = "agent/run/clean") -> RunResult:
    result: RunResult = rt.start(agent, "go", id=id).details(timeout=15)
    return result


def held(run: str, what: str, turn: int) -> None:
    """Wait until ``run`` waits where ``HOLD`` holds it (``what`` of ``turn``)."""
    kit.HOLD[run] = (what, turn)

    def there() -> bool:
        if what == "model":
            return any(
                m.name == "model" and m.key.startswith(f"resumer:{turn}|{run}/")
                for m in kit.marks()
            )
        return any(m.name == "tool:slow" and kit.run_of(m.key) == run for m in kit.marks()) and (
            len([m for m in kit.marks() if m.name == "tool:slow" and kit.run_of(m.key) == run])
            == turn
        )

    eventually(there, what=f"{run} held at its {what} of turn {turn}")


def model_fingerprints(dsn: str, run: str) -> list[str]:
    """The fingerprints of a run's model steps (each hashes the whole request)."""
    return [r.fingerprint or "" for r in kit.rows(dsn, run) if r.label.startswith("model:")]


@pytest.fixture(autouse=True)
def _clear() -> Any:
    kit.HOLD.clear()
    kit.RECORDED.clear()
    yield
    kit.HOLD.clear()


def test_a_run_canceled_during_a_model_call_resumes_from_its_last_whole_turn(
    rt: Runtime, dsn: str
) -> None:
    clean = clean_run(rt)
    run = "agent/run/r1"
    handle = rt.start(RESUMER, "go", id=run)
    held(run, "model", 2)
    assert rt.cancel(run, reason="pause")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    # The model call in flight was cancelled, and nothing was kept for it; no call was open,
    # so there is nothing to answer: the transcript ends with the first whole turn.
    eventually(lambda: [m for m in kit.marks() if m.name == "model:cancelled"])
    assert [r.label for r in all_rows[1:]] == ["model:resumer", "tool:quick", "tool:slow"]
    assert canceled_calls(all_rows, run) is None

    with pytest.raises(InvalidInputError):
        rt.resume("agent/run/clean")  # finished: nothing to resume
    resumed = rt.resume(run)
    assert resumed.id == f"{run}~resume1"
    assert resumed.details(timeout=15) == clean
    # From the second turn on, the model was asked exactly what the clean run asked it.
    assert requests_of(resumed.id) == requests_of("agent/run/clean")[1:]
    # The old run is left as it was; its first turn was not run again.
    assert kit.rows(dsn, run) == all_rows
    quick_runs = [kit.run_of(m.key) for m in kit.marks() if m.name == "tool:quick"]
    assert quick_runs.count(run) == 1 and quick_runs.count(resumed.id) == 2
    with pytest.raises(InvalidInputError):
        rt.resume(resumed.id)  # finished


def test_a_run_canceled_in_a_durable_tool_answers_the_call_and_resumes_before_that_turn(
    rt: Runtime, dsn: str
) -> None:
    clean = clean_run(rt, NAPPER)
    run = "agent/run/r2"
    kit.HOLD[run] = ("timer", 2)
    handle = rt.start(NAPPER, "go", id=run)
    eventually(
        lambda: kit.sql(dsn, "SELECT 1 FROM promises WHERE id = %s AND awaiting IS NOT NULL", run),
        what="suspended on the timer",
    )
    assert rt.cancel(run)
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    # The call in flight is answered with the cancellation, after the tool's own cleanup.
    assert [r.label for r in all_rows[1:]] == [
        "model:napper",
        "tool:quick",
        "model:napper",
        "sleep",
        "cleanup",
        "canceled_calls",
    ]
    assert canceled_calls(all_rows, run) == canceled_answers([("b1", "nap")])
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"nap 2 of {run}"]

    resumed = rt.resume(run)
    assert resumed.details(timeout=15) == clean
    # The interrupted turn was not whole: the model is asked its second turn again.
    assert requests_of(resumed.id) == requests_of("agent/run/clean")[1:]


def test_a_timed_out_run_resumes_like_a_canceled_one(rt: Runtime, dsn: str) -> None:
    clean = clean_run(rt, NAPPER)
    run = "agent/run/r3"
    kit.HOLD[run] = ("timer", 2)
    handle = rt.start(NAPPER, "go", id=run, deadline=0.8)
    with pytest.raises(PromiseTimedOutError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run, root_state="rejected_timedout")
    assert all_rows[0].settled - all_rows[0].created == pytest.approx(0.8, abs=0.3)
    assert canceled_calls(all_rows, run) == canceled_answers([("b1", "nap")])
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"nap 2 of {run}"]
    resumed = rt.resume(run)
    assert resumed.details(timeout=15) == clean
    assert requests_of(resumed.id) == requests_of("agent/run/clean")[1:]


def test_promissory_resume_continues_a_run_in_another_process(rt: Runtime, dsn: str) -> None:
    clean = clean_run(rt)
    run = "agent/run/r4"
    handle = rt.start(RESUMER, "go", id=run)
    held(run, "model", 3)
    kit.cancel("cli", dsn, None, run, "paused from the command line")
    with pytest.raises(PromiseCanceledError, match="paused from the command line"):
        handle.result(timeout=10)
    check_canceled(dsn, run)

    started = time.time()
    out = python(
        "-m", "promissory", "--dsn", dsn, "--json", "resume", run, "--module", "tests.cancel.kit"
    )
    assert json.loads(out) == {
        "run_id": f"{run}~resume1",
        "resumed": run,
        "result": clean.output,
    }
    # The other process asked the model what the clean run asked it from the third turn on
    # (a model step's fingerprint hashes the whole request).
    resumed = f"{run}~resume1"
    assert model_fingerprints(dsn, resumed) == model_fingerprints(dsn, "agent/run/clean")[2:]
    assert [r for r in rows(dsn, resumed) if r.created < started] == []
    [(state, value)] = kit.sql(dsn, "SELECT state, value FROM promises WHERE id = %s", resumed)
    assert state == "resolved"
    assert RunResult(**{**value, "usage": clean.usage}) == clean


def test_resuming_twice_joins_the_continuation_and_a_canceled_continuation_is_continued(
    rt: Runtime, dsn: str
) -> None:
    clean = clean_run(rt)
    run = "agent/run/twice"
    handle = rt.start(RESUMER, "go", id=run)
    held(run, "model", 2)
    assert rt.cancel(run)
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    first = f"{run}~resume1"
    kit.HOLD[first] = ("model", 3)
    resumed = rt.resume(run)
    assert resumed.id == first
    held(first, "model", 3)
    # Resumed again while the continuation runs: the same run, nothing new started.
    assert rt.resume(run).id == first
    assert kit.sql(dsn, "SELECT id FROM promises WHERE id LIKE %s", f"{run}~resume2%") == []
    # The continuation is canceled in turn 3: the next resume continues it, not the original.
    assert rt.cancel(first)
    with pytest.raises(PromiseCanceledError):
        resumed.result(timeout=10)
    second = rt.resume(run)
    assert second.id == f"{run}~resume2"
    assert second.details(timeout=15) == clean
    # It starts from the continuation's last whole turn (2), rebuilt through both runs.
    assert requests_of(second.id) == requests_of("agent/run/clean")[2:]
    # Finished: resuming again joins it; each tool ran once per run that kept its call.
    assert rt.resume(run).id == second.id
    quick_runs = [kit.run_of(m.key) for m in kit.marks() if m.name == "tool:quick"]
    assert quick_runs.count(first) == 1 and quick_runs.count(second.id) == 1
