"""Canceling a three-level agent tree (lead → sub-agent → leaf agent, each a child actor of the
one above) while it works: every promise under the run ends settled, no step starts after the
cancel is kept, cleanup steps run once, and every tool call the models made is
answered.

However the run is canceled (``rt.cancel``, ``promissory cancel`` in another process,
``Store.cancel`` in another process, plain SQL), the outcome is the same; and a cancel kept
while no process runs takes effect when a runtime starts.
"""

from __future__ import annotations

import pytest

from promissory.agents import Agent, call, reply
from promissory.errors import PromiseCanceledError
from promissory.runtime import Runtime
from promissory.store import Store
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
from tests.cancel.kit import blocking, eventually, marked, rows, sql


def models_asked() -> list[str]:
    """Which model was asked which turn (``{agent}:{turn}``), sorted."""
    return sorted(m.what for m in kit.marks() if m.name == "model")


@pytest.mark.parametrize("how", ["rt", "cli", "store", "sql"])
def test_a_tree_suspended_on_a_timer_is_canceled_the_same_way_by_every_means(
    rt: Runtime, dsn: str, how: str
) -> None:
    run = f"agent/run/timer-{how}"
    handle = start_tree(rt, dsn, "timer", run)
    kit.cancel(how, dsn, rt, run, reason=f"canceled by {how}")

    with pytest.raises(PromiseCanceledError, match=f"canceled by {how}"):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    assert all_rows[0].value["message"] == f"canceled by {how}"
    leaf = message_of(all_rows, "leaf")
    # The timer was canceled with the run: it never fired, and nothing after the sleep ran.
    [timer] = [r for r in all_rows if r.kind == "timer"]
    assert timer.id == f"{leaf}/2" and timer.state == "rejected_canceled"
    assert [m for m in kit.marks() if m.name == "after"] == []
    # The durable tool's cleanup (in `except Canceled:`) ran once, as a kept step, and the
    # leaf's open call is answered with the cancellation.
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"timer:{leaf}"]
    for kept in steps_of(all_rows, leaf):
        if kept.label == "cleanup":
            assert (kept.state, kept.value) == ("resolved", f"cleaned up timer:{leaf}")
    assert canceled_calls(all_rows, leaf) == canceled_answers([("c-leaf", "wait_timer")])
    check_answers(all_rows, run)
    # Every model was asked once, for its first turn only.
    assert models_asked() == ["lead_timer:1", "leaf_timer:1", "sub_timer:1"]


def test_a_tree_waiting_on_a_human_approval_is_canceled_with_its_approval(
    rt: Runtime, dsn: str
) -> None:
    run = "agent/run/approval"
    handle = start_tree(rt, dsn, "approval", run)
    [(approval, param)] = sql(
        dsn, "SELECT id, param FROM promises WHERE kind = 'promise' AND state = 'pending'"
    )
    assert approval == f"{run}/3/3/2" and param == {"action": "deploy"}

    assert rt.cancel(run, reason="nobody is on call")
    with pytest.raises(PromiseCanceledError, match="nobody is on call"):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    # The approval was canceled with the run; approving it now changes nothing.
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = %s", approval)
    assert state == "rejected_canceled"
    assert rt.store is not None
    assert not rt.store.resolve(approval, {"approved": True}).applied
    assert [m for m in kit.marks() if m.name == "after"] == []
    check_answers(all_rows, run)
    assert models_asked() == ["lead_approval:1", "leaf_approval:1", "sub_approval:1"]


def test_async_tools_in_flight_are_canceled_and_nothing_is_kept_for_them(
    rt: Runtime, dsn: str
) -> None:
    run = "agent/run/async"
    handle = rt.start(kit.TREES["async2"], "go", id=run)
    eventually(
        lambda: len([m for m in kit.marks() if m.name == "tool:sleepy"]) == 2,
        what="both async tools running",
    )
    assert rt.cancel(run, reason="stop")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(dsn, run)
    leaf = message_of(all_rows, "leaf")
    # Both tasks saw CancelledError; neither finished.
    tool_steps = sorted(m.key for m in kit.marks() if m.name == "tool:sleepy")
    assert tool_steps == [f"{leaf}/2", f"{leaf}/3"]
    eventually(lambda: sorted(kit.ASYNC_CANCELLED) == tool_steps, what="both tasks cancelled")
    assert [m for m in kit.marks() if m.name == "tool:sleepy:done"] == []
    # Nothing was kept for them: the places held for them were canceled with the run.
    for r in all_rows:
        if r.id in tool_steps:
            assert r.state == "rejected_canceled", r
            assert r.value["type"] == "promissory.errors.PromiseCanceledError"
    # Both calls are answered with the cancellation.
    assert canceled_calls(all_rows, leaf) == canceled_answers(
        [("c-leaf-1", "sleepy"), ("c-leaf-2", "sleepy")]
    )
    check_answers(all_rows, run)
    assert models_asked() == ["lead_async2:1", "leaf_async2:1", "sub_async2:1"]


@pytest.mark.parametrize("how", ["store", "cli"])
def test_a_cancel_kept_while_no_process_runs_takes_effect_on_the_next_start(
    dsn: str, how: str
) -> None:
    kit.reset()
    run = f"agent/run/down-{how}"
    with Runtime(dsn) as rt:
        start_tree(rt, dsn, "timer", run)
    if how == "store":
        with Store(dsn) as store:
            assert store.cancel(run, "canceled while down").applied
    else:
        kit.cancel("cli", dsn, None, run, "canceled while down")
    # In the database, at once: everything pending under the run is canceled (in the cancel's
    # own transaction), and each canceled message is marked for its handler's cleanup replay.
    all_rows = rows(dsn, run)
    assert [r.id for r in all_rows if r.state == "pending"] == []
    canceled = sql(
        dsn,
        f"SELECT id, xmin::text FROM promises WHERE {kit.UNDER} AND state = 'rejected_canceled'",
        *kit.under(run),
    )
    assert {id for id, _ in canceled} == {run, f"{run}/3", f"{run}/3/3", f"{run}/3/3/2"}
    assert len({xmin for _, xmin in canceled}) == 1
    assert {r.id for r in all_rows if r.marked} == {run, f"{run}/3", f"{run}/3/3"}
    assert {r.state for r in all_rows if r.kind in ("message", "timer")} == {"rejected_canceled"}

    with Runtime(dsn):
        all_rows = check_canceled(dsn, run)
    leaf = message_of(all_rows, "leaf")
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == [f"timer:{leaf}"]
    check_answers(all_rows, run)
    assert [r.id for r in all_rows if r.marked] == []
    # Another start finds nothing to do for the run: no cleanup runs again.
    with Runtime(dsn) as again:
        assert again.recovery is not None and again.recovery.activated == 0
    assert len([m for m in kit.marks() if m.name == "cleanup"]) == 1
    assert models_asked() == ["lead_timer:1", "leaf_timer:1", "sub_timer:1"]
    kit.reset()


def test_a_sync_tool_in_progress_finishes_and_its_result_is_kept_but_not_acted_on(
    rt: Runtime, dsn: str
) -> None:
    leaf = Agent(
        "two_leaf",
        "Use the tool.",
        marked("two_leaf", [reply("", call("blocking", "c1", topic="pg")), "leaf done"]),
        tools=[blocking],
    )
    lead = Agent(
        "two_lead",
        "Delegate.",
        marked("two_lead", [reply("", call("leaf", "c2", input="go")), "lead done"]),
        tools=[leaf.as_tool(name="leaf")],
    )
    run = "agent/run/sync2"
    handle = rt.start(lead, "go", id=run)
    eventually(lambda: [m for m in kit.marks() if m.name == "tool:blocking"], what="tool runs")
    assert rt.cancel(run)
    at = kit.settled_at(dsn, run)
    # The tool is still running, in its thread; let it finish.
    kit.gate("sync").set()
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=10)
    all_rows = check_canceled(
        dsn, run, allowed_after=frozenset({"canceled_calls", "tool:blocking"})
    )
    child = message_of(all_rows, "leaf")
    [done] = [m for m in kit.marks() if m.name == "tool:blocking:done"]
    assert done.at > at
    # Its result is kept…
    [tool] = [r for r in steps_of(all_rows, child) if r.label == "tool:blocking"]
    assert (tool.state, tool.value) == ("resolved", "notes on pg")
    assert tool.created > at
    # …and not acted on: the leaf's model was not asked again, nothing else was kept.
    assert models_asked() == ["two_lead:1", "two_leaf:1"]
    assert [r.label for r in steps_of(all_rows, child)] == ["model:two_leaf", "tool:blocking"]
    # The lead's call of the leaf is answered.
    check_lead = canceled_calls(all_rows, run)
    assert check_lead in (None, canceled_answers([("c2", "leaf")]))
