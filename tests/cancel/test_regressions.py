"""Regressions: cancellation and deadline bugs found by review, one test (or two) each.

Each ``Was:`` comment says what went wrong before the fix; the test states what must hold.
"""

from __future__ import annotations

import time

import pytest

from promissory.actors import Canceled, Context, DurableActor, RetryPolicy, handler
from promissory.agents import Agent, Tool, call, reply
from promissory.errors import PromiseCanceledError, PromiseTimedOutError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.checks import (
    canceled_answers,
    canceled_calls,
    check_answers,
    check_canceled,
    message_of,
    start_tree,
    steps_of,
)
from tests.cancel.kit import (
    RESUMER,
    AsyncStep,
    Timed,
    eventually,
    marked,
    requests_of,
    rows,
    sql,
)

# -- 1. step_many's one-step path swallows Canceled (and Suspend) -------------------------------


def test_bug1_a_lone_async_tool_call_canceled_ends_the_run_and_is_answered(
    rt: Runtime, dsn: str
) -> None:
    agent = Agent(
        "lone_async",
        "Sleep.",
        marked("lone_async", [reply("", call("sleepy", "c1", seconds=30.0)), "went on"]),
        tools=[kit.sleepy],
    )
    run = "agent/run/lone-async"
    handle = rt.start(agent, "go", id=run)
    eventually(lambda: [m for m in kit.marks() if m.name == "tool:sleepy"])
    assert rt.cancel(run)
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)  # fails: the model was asked its 2nd turn
    assert canceled_calls(all_rows, run) == canceled_answers([("c1", "sleepy")])


def test_bug1_a_lone_tool_call_waiting_out_a_long_retry_backoff_is_retried(
    rt: Runtime, dsn: str
) -> None:
    calls: list[int] = []

    def flaky(x: int) -> str:
        """Fail the first time.

        Args:
            x: anything.
        """
        calls.append(x)
        if len(calls) == 1:
            raise RuntimeError("first time fails")
        return "ok"

    agent = Agent(
        "lone_retry",
        "Retry.",
        marked("lone_retry", [reply("", call("flaky", "c1", x=1)), "done"]),
        tools=[Tool(flaky, retry=RetryPolicy(max_attempts=3, initial_interval=0.5))],
    )
    assert rt.run(agent, "go", id="agent/run/lone-retry", timeout=15) == "done"
    # Was: the backoff's Suspend came back as the tool's result ("Suspend: (…)").
    assert len(calls) == 2
    asked = agent.model.inner.requests[1]  # type: ignore[attr-defined]
    assert [(r.content, r.is_error) for r in asked.messages[-1].tool_results] == [("ok", False)]


# -- 2. a wait whose promise the cascade canceled raises PromiseCanceledError, not Canceled ---


class Approver(DurableActor[None]):
    @handler
    def ask(self, ctx: Context, msg: str) -> str:
        try:
            return str(ctx.promise().result())
        except Canceled:
            ctx.step(kit.cleanup, ctx.message_id, name="cleanup")
            raise


def test_bug2_a_suspended_wait_on_a_promise_sees_its_messages_cancel_as_cancelled(
    rt: Runtime, dsn: str
) -> None:
    rt.spawn(Approver, id="approver")
    reply = rt.ref("approver").ask("deploy?", id="approver/m")
    eventually(
        lambda: sql(dsn, "SELECT 1 FROM promises WHERE id = 'approver/m' AND awaiting IS NOT NULL"),
        what="suspended",
    )
    assert rt.cancel("approver/m")
    with pytest.raises(PromiseCanceledError):
        reply.get(timeout=10)
    kit.wait_quiet(dsn, "approver/m")
    # Was: result() raised PromiseCanceledError, so `except Canceled` never ran.
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == ["approver/m"]


def test_bug2_a_durable_tool_waiting_on_an_approval_cleans_up(rt: Runtime, dsn: str) -> None:
    run = "agent/run/approval-strict"
    start_tree(rt, dsn, "approval", run)
    assert rt.cancel(run)
    all_rows = check_canceled(dsn, run)
    leaf = message_of(all_rows, "leaf")
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"approval:{leaf}"]


# -- 3. a parent's end cuts off its children's cleanup ---------------------------------------


@pytest.mark.parametrize("attempt", range(4))
def test_bug3_every_agent_of_a_canceled_tree_finishes_its_cleanup(
    rt: Runtime, dsn: str, attempt: int
) -> None:
    run = f"agent/run/strict-{attempt}"
    start_tree(rt, dsn, "timer", run)
    assert rt.cancel(run)
    # Was (often): the leaf's canceled message stays marked, its cleanup cut off or never run.
    all_rows = check_canceled(dsn, run)
    leaf = message_of(all_rows, "leaf")
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"timer:{leaf}"]
    assert canceled_calls(all_rows, leaf) == canceled_answers([("c-leaf", "wait_timer")])
    check_answers(all_rows, run)


def test_bug3_a_sync_tool_in_progress_in_a_three_level_tree_is_kept(rt: Runtime, dsn: str) -> None:
    run = "agent/run/sync3"
    handle = rt.start(kit.TREES["sync"], "go", id=run)
    eventually(lambda: [m for m in kit.marks() if m.name == "tool:blocking"], what="tool runs")
    assert rt.cancel(run)
    eventually(
        lambda: all(r.state != "pending" for r in rows(dsn, run) if r.kind == "message"),
        what="the cancel reached every message of the tree",
    )
    kit.gate("sync").set()
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    eventually(lambda: [m for m in kit.marks() if m.name == "tool:blocking:done"])
    late = frozenset({"canceled_calls", "tool:blocking"})
    all_rows = check_canceled(dsn, run, allowed_after=late)
    leaf = message_of(all_rows, "leaf")
    time.sleep(0.3)
    all_rows = rows(dsn, run)
    # Was: the leaf was fenced off by a second end of the tree that did not wait for it:
    # the tool's result is not kept, and the leaf's message stays marked for a cleanup.
    assert [(r.label, r.state) for r in steps_of(all_rows, leaf)] == [
        ("model:leaf_sync", "resolved"),
        ("tool:blocking", "resolved"),
    ]
    assert kit.quiet(dsn, run) == []


# -- 4. resume after a cancel in the middle of parallel tools -------------------------------


def test_bug4_a_run_canceled_during_parallel_tools_resumes_like_an_uninterrupted_one(
    rt: Runtime, dsn: str
) -> None:
    kit.HOLD.clear()
    kit.RECORDED.clear()
    clean = rt.start(RESUMER, "go", id="agent/run/clean").details(timeout=15)
    run = "agent/run/b"
    kit.HOLD[run] = ("tool", 2)
    handle = rt.start(RESUMER, "go", id=run)
    eventually(
        lambda: (
            len([m for m in kit.marks() if m.name == "tool:slow" and kit.run_of(m.key) == run]) == 2
        ),
        what="second turn's slow tool running",
    )
    assert rt.cancel(run)
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    check_canceled(dsn, run, allowed_after=frozenset({"canceled_calls", "tool:quick"}))
    resumed = rt.resume(run)
    assert resumed.details(timeout=15) == clean
    # Was: the resumed run treats the interrupted turn as whole, and shows the model the
    # canceled step as the tool's error ("PromiseCanceledError: canceled with agent/run/b").
    asked = requests_of(resumed.id)
    clean_asked = requests_of("agent/run/clean")
    assert asked and asked == clean_asked[len(clean_asked) - len(asked) :]
    kit.HOLD.clear()


# -- 5. canceled_calls forgets the results of the calls that finished ----------------------------


def test_bug5_canceled_calls_keeps_the_results_of_calls_that_finished(
    rt: Runtime, dsn: str
) -> None:
    kit.HOLD.clear()
    run = "agent/run/finished"
    kit.HOLD[run] = ("tool", 1)
    handle = rt.start(RESUMER, "go", id=run)
    eventually(
        lambda: (
            [m for m in kit.marks() if m.name == "tool:slow" and kit.run_of(m.key) == run]
            and [m for m in kit.marks() if m.name == "tool:quick" and kit.run_of(m.key) == run]
        ),
        what="both tools started",
    )
    eventually(
        lambda: [r for r in rows(dsn, run) if r.label == "tool:quick" and r.state == "resolved"],
        what="quick has finished and is kept",
    )
    assert rt.cancel(run)
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    [kept] = [r for r in all_rows if r.label == "tool:quick"]
    assert (kept.state, kept.value) == ("resolved", "notes on a")
    answers = canceled_calls(all_rows, run)
    assert answers is not None
    # Was: quick's kept result is replaced by the cancellation (close_turn's docstring:
    # "Calls that finished keep their results").
    assert answers[0]["content"] == "notes on a" and not answers[0]["is_error"]
    kit.HOLD.clear()


# -- 6. a run deadline during a retried model call ---------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
def test_bug6_a_run_deadline_during_a_model_call_leaves_nothing_pending_or_new(
    rt: Runtime, dsn: str, attempt: int
) -> None:
    kit.HOLD.clear()
    run = f"agent/run/model-deadline-{attempt}"
    kit.HOLD[run] = ("model", 2)
    handle = rt.start(RESUMER, "go", id=run, deadline=0.5)
    with pytest.raises(PromiseTimedOutError):
        handle.result(timeout=10)
    time.sleep(0.3)
    # Was: the model step cut by the run's deadline is retried as a failed attempt: its
    # pending attempt row and its retry timer are written after the run timed out (the row,
    # when written after the cascade, stays pending for good).
    late = [(r.id, r.kind, r.state) for r in rows(dsn, run) if r.created > kit.settled_at(dsn, run)]
    assert late == []
    check_canceled(dsn, run, root_state="rejected_timedout")
    kit.HOLD.clear()


# -- 7. a message deadline cutting a step in flight crashes the actor ---------------------------


def test_bug7_a_message_deadline_cutting_a_step_is_cancelled_not_a_crash(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Timed, id="timed")
    reply = ref.ask(AsyncStep(seconds=30, timeout=10), id="timed/m", timeout=0.4)
    with pytest.raises(PromiseTimedOutError):
        reply.get(timeout=10)
    eventually(lambda: [m for m in kit.marks() if m.name == "work:cancelled"])
    time.sleep(0.5)
    # Was: the step fails with StepTimedOutError (kept as rejected_timedout) before the
    # runtime sees the message time out, so the handler raises it: a crash, and a restart.
    assert [m.key for m in kit.marks() if m.name == "cancelled"] == ["timed/m deadline=True"]
    assert sql(dsn, "SELECT status, restarts FROM actors WHERE id = 'timed'") == [("running", 0)]


# -- 8. a fenced agent run takes a FencedError for a tool's error and asks its model again -------


def _blocked_cleanup(key: str) -> str:
    kit.mark("cleanup", key)
    kit.gate("cleanup").wait(30)
    return f"cleaned up {key}"


def _nap_then_clean(ctx: Context, seconds: float) -> str:
    """Sleep; when canceled, clean up (slowly).

    Args:
        seconds: how long.
    """
    try:
        ctx.sleep(seconds)
        return "slept"
    except Canceled:
        ctx.step(_blocked_cleanup, ctx.message_id, name="cleanup")
        raise


def test_bug8_a_fenced_agent_run_does_not_go_on_to_ask_its_model(dsn: str) -> None:
    kit.reset()
    agent = Agent(
        "fenced",
        "Nap.",
        marked("fenced", [reply("", call("_nap_then_clean", "c1", seconds=60.0)), "went on"]),
        tools=[_nap_then_clean],
    )
    run = "agent/run/fenced"
    with Runtime(dsn, suspend_after=30) as rt:
        rt.start(agent, "go", id=run)
        eventually(
            lambda: sql(dsn, "SELECT 1 FROM promises WHERE kind = 'timer' AND state = 'pending'")
        )
        assert rt.cancel(run)
        eventually(lambda: [m for m in kit.marks() if m.name == "cleanup"], what="cleaning up")
        # Its actor is ended (as a parent's end of the tree does) while it cleans up: the
        # cleanup's write is refused (FencedError), and the run must stop there.
        assert rt.stop(run)
        at = kit.settled_at(dsn, run)
        kit.gate("cleanup").set()
        time.sleep(0.5)
        # Was: the FencedError became the tool's error result and the model was asked again.
        assert kit.started_after(kit.marks(), at, run) == []
    kit.reset()
