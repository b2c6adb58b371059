"""Deadlines at every level, each a promise timeout (``rejected_timedout``): a run's, an actor
message's, a step's, a tool call's; the nearest one wins; and one that passes while no process
runs is honoured when a runtime starts.
"""

from __future__ import annotations

import pytest

from promissory.agents import Agent, RunHandle, Tool, ToolResult, call, reply
from promissory.errors import PromiseTimedOutError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.checks import check_answers, check_canceled, message_of, start_tree
from tests.cancel.kit import (
    AsyncStep,
    Child,
    Nap,
    SyncStep,
    Timed,
    eventually,
    marked,
    rows,
    sql,
)


def state_of(dsn: str, id: str) -> str:
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = %s", id)
    return str(state)


def lifetime(dsn: str, id: str) -> float:
    """Seconds from ``id``'s creation to its settling (waiting for it to be settled: a reply
    says a deadline passed as soon as it has, before the timer service keeps it)."""
    [(seconds,)] = eventually(
        lambda: sql(
            dsn,
            "SELECT extract(epoch FROM settled_at - created_at)::float8 FROM promises"
            " WHERE id = %s AND settled_at IS NOT NULL",
            id,
        ),
        what=f"{id} settled",
    )
    return float(seconds)


def marks_named(name: str) -> list[kit.Mark]:
    return [m for m in kit.marks() if m.name == name]


def test_a_run_deadline_times_the_run_out_and_cancels_everything_under_it(
    rt: Runtime, dsn: str
) -> None:
    run = "agent/run/deadline"
    # Long enough for the tree to reach its leaf's timer first, even on a loaded machine.
    handle = rt.start(kit.TREES["timer"], "go", id=run, deadline=3.0)
    with pytest.raises(PromiseTimedOutError):
        handle.result(timeout=20)
    # At its deadline, not at the leaf's 60 s timer; the upper bound leaves slack for a
    # loaded machine.
    assert 2.95 <= lifetime(dsn, run) < 8
    [(timeout_at_offset,)] = sql(
        dsn,
        "SELECT extract(epoch FROM timeout_at - created_at)::float8 FROM promises WHERE id = %s",
        run,
    )
    assert timeout_at_offset == pytest.approx(3.0, abs=0.05)
    all_rows = check_canceled(dsn, run, root_state="rejected_timedout")
    # What was under it is canceled by the run's timeout (not timed out on its own).
    leaf = message_of(all_rows, "leaf")
    assert {r.id: r.state for r in all_rows if r.kind in ("message", "timer")} == {
        run: "rejected_timedout",
        f"{run}/3": "rejected_canceled",
        leaf: "rejected_canceled",
        f"{leaf}/2": "rejected_canceled",
    }
    check_answers(all_rows, run)
    assert [m for m in kit.marks() if m.name == "after"] == []


def test_a_message_deadline_times_the_message_out_and_its_handler_cleans_up(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Child, id="napper")
    # Long enough for the handler to be asleep (its timer made) before the deadline, even on
    # a loaded machine.
    reply = ref.ask(Nap(30), id="napper/m", timeout=2.0)
    with pytest.raises(PromiseTimedOutError):
        reply.get(timeout=20)
    # At its deadline, not at the end of the 30 s nap; slack for a loaded machine.
    assert 1.95 <= lifetime(dsn, "napper/m") < 7
    all_rows = check_canceled(dsn, "napper/m", root_state="rejected_timedout", actors=False)
    assert [(r.id, r.kind, r.state, r.label) for r in all_rows] == [
        ("napper/m", "message", "rejected_timedout", ""),
        ("napper/m/1", "timer", "rejected_canceled", "sleep"),
        ("napper/m/2", "step", "resolved", "cleanup"),
    ]
    # The handler saw the deadline as `Canceled` with `deadline` set, and cleaned up once.
    assert [m.key for m in marks_named("cancelled")] == [
        "napper/m deadline=True reason=the deadline of napper/m passed"
    ]
    assert [m.key for m in marks_named("cleanup")] == ["napper/m"]
    # The actor goes on: a timed-out message is not a crash.
    assert sql(dsn, "SELECT status, restarts FROM actors WHERE id = 'napper'") == [("running", 0)]
    assert ref.ask(kit.Job(2, 0.01)).get(timeout=10) == "napper"


def test_an_async_step_is_canceled_at_its_timeout_which_is_kept(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Timed, id="timed1")
    answer = ref.ask(AsyncStep(seconds=30, timeout=0.3), id="timed1/m").get(timeout=10)
    assert answer == "StepTimedOutError: step timed1/m/1 took longer than 0.300 s"
    # The function's task saw CancelledError at the timeout.
    [started] = marks_named("work")
    [cancelled] = marks_named("work:cancelled")
    # At the timeout, not at the end of its 30 s: slack above for a loaded machine.
    assert 0.25 <= cancelled.at - started.at < 5
    # The final timeout is kept as `rejected_timedout`: a replay raises it again.
    [(state, value)] = sql(dsn, "SELECT state, value FROM promises WHERE id = 'timed1/m/1'")
    assert state == "rejected_timedout"
    assert value["type"] == "promissory.errors.StepTimedOutError"
    assert state_of(dsn, "timed1/m") == "resolved"


def test_a_sync_steps_late_result_counts_as_a_timeout(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Timed, id="timed2")
    # One attempt, late: the step times out, though the function returned.
    answer = ref.ask(SyncStep(seconds=0.3, timeout=0.1), id="timed2/a").get(timeout=10)
    assert answer.startswith("StepTimedOutError: step timed2/a/1 took longer than 0.100 s")
    assert [m.key for m in marks_named("work:done")] == ["timed2/a/1#1"]
    [(state, attempt)] = sql(dsn, "SELECT state, attempt FROM promises WHERE id = 'timed2/a/1'")
    assert (state, attempt) == ("rejected_timedout", 1)
    # Two attempts: the late first one is a failed attempt, the second is kept.
    answer = ref.ask(SyncStep(seconds=0.3, timeout=0.1, attempts=2), id="timed2/b").get(timeout=10)
    assert answer == "attempt 2"
    [(state, attempt, value)] = sql(
        dsn, "SELECT state, attempt, value FROM promises WHERE id = 'timed2/b/1'"
    )
    assert (state, attempt, value) == ("resolved", 2, "attempt 2")


def test_a_step_timeout_nearer_than_the_message_deadline_wins(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Timed, id="timed3")
    reply = ref.ask(AsyncStep(seconds=30, timeout=0.2), id="timed3/m", timeout=5)
    assert reply.get(timeout=10) == "StepTimedOutError: step timed3/m/1 took longer than 0.200 s"
    assert state_of(dsn, "timed3/m") == "resolved"


def test_a_message_deadline_nearer_than_the_step_timeout_wins(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Timed, id="timed4")
    # The deadline leaves the handler time to start its step first, even on a loaded machine.
    reply = ref.ask(AsyncStep(seconds=30, timeout=10), id="timed4/m", timeout=2.0)
    with pytest.raises(PromiseTimedOutError):
        reply.get(timeout=20)
    # The step was cut at the message's deadline, not at its own timeout (10 s). The step
    # starts some time after the message is made, so the cut is compared with the deadline
    # itself (the database runs on this machine's clock, as the marks do).
    eventually(lambda: marks_named("work:cancelled"), what="the step cut")
    [started] = marks_named("work")
    [cancelled] = marks_named("work:cancelled")
    [(due,)] = sql(
        dsn, "SELECT extract(epoch FROM timeout_at)::float8 FROM promises WHERE id = 'timed4/m'"
    )
    assert cancelled.at >= due - 0.05
    assert cancelled.at - started.at < 5
    assert 1.95 <= lifetime(dsn, "timed4/m") < 7
    kit.wait_quiet(dsn, "timed4/m")
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'timed4/m/1'") or [(None,)]
    assert state in (None, "rejected_timedout", "rejected_canceled")


def test_a_tool_call_timeout_is_an_error_result_and_the_run_goes_on(rt: Runtime, dsn: str) -> None:
    agent = Agent(
        "tool_timeout",
        "Sleep, briefly.",
        marked("tool_timeout", [reply("", call("sleepy", "c1", seconds=30.0)), "gave up"]),
        tools=[Tool(kit.sleepy, timeout=0.3)],
    )
    run = "agent/run/tool-timeout"
    assert rt.run(agent, "go", id=run, timeout=10) == "gave up"
    [started] = marks_named("tool:sleepy")
    [cancelled] = marks_named("tool:sleepy:cancelled")
    # At the timeout, not at the end of its 30 s: slack above for a loaded machine.
    assert 0.25 <= cancelled.at - started.at < 5
    assert [(r.id, r.state, r.label) for r in rows(dsn, run)] == [
        (run, "resolved", ""),
        (f"{run}/1", "resolved", "model:tool_timeout"),
        (f"{run}/2", "rejected_timedout", "tool:sleepy"),
        (f"{run}/3", "resolved", "model:tool_timeout"),
    ]
    asked = agent.model.inner.requests[1]  # type: ignore[attr-defined]
    assert asked.messages[-1].tool_results == [
        ToolResult(
            call_id="c1",
            name="sleepy",
            content=f"StepTimedOutError: step {run}/2 took longer than 0.300 s",
            is_error=True,
        )
    ]


def test_a_message_deadline_that_passes_while_no_process_runs_is_honoured_on_start(
    dsn: str,
) -> None:
    kit.reset()
    with Runtime(dsn) as rt:
        rt.spawn(Child, id="sleeper")
        # The deadline must not pass while this runtime runs, however slowly a loaded
        # machine gets the handler suspended: the fake clock makes it pass below.
        rt.ref("sleeper").ask(Nap(30), id="sleeper/m", timeout=5.0)
        eventually(
            lambda: sql(
                dsn, "SELECT 1 FROM promises WHERE id = 'sleeper/m' AND awaiting IS NOT NULL"
            ),
            what="suspended",
        )
    kit.time_passes(dsn, 5.0)
    # Past its deadline, and nothing ran to time it out: it is still pending.
    [(state, overdue)] = sql(
        dsn,
        "SELECT state, timeout_at < clock_timestamp() FROM promises WHERE id = 'sleeper/m'",
    )
    assert (state, overdue) == ("pending", True)
    with Runtime(dsn):
        check_canceled(dsn, "sleeper/m", root_state="rejected_timedout", actors=False)
    assert [m.key for m in marks_named("cleanup")] == ["sleeper/m"]
    assert [m.key for m in marks_named("cancelled")] == [
        "sleeper/m deadline=True reason=the deadline of sleeper/m passed"
    ]
    kit.reset()


def test_a_run_deadline_that_passes_while_no_process_runs_is_honoured_on_start(
    dsn: str,
) -> None:
    kit.reset()
    run = "agent/run/deadline-down"
    with Runtime(dsn) as rt:
        # Long enough that it does not pass while the tree starts on a loaded machine.
        handle = rt.start(kit.TREES["timer"], "go", id=run, deadline=5.0)
        start_tree(rt, dsn, "timer", run, started=handle)
    kit.time_passes(dsn, 5.0)
    assert state_of(dsn, run) == "pending"
    with Runtime(dsn) as rt:
        assert rt.store is not None
        with pytest.raises(PromiseTimedOutError):
            RunHandle(run, rt.store).result(timeout=10)
        all_rows = check_canceled(dsn, run, root_state="rejected_timedout")
    check_answers(all_rows, run)
    assert len(marks_named("cleanup")) <= 1
    kit.reset()
