"""A parent sees its child's cancellation as ``ChildCanceledError``, distinct from a crash
(``ChildFailedError``); supervision treats a canceled child like a ``shutdown`` exit: a transient
child is not restarted.
"""

from __future__ import annotations

import time

import pytest

from promissory.actors import SupervisorRef
from promissory.agents import Agent, ToolResult, call, reply
from promissory.errors import ChildCanceledError, ChildFailedError, PromiseCanceledError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.checks import canceled_answers, canceled_calls, check_canceled, message_of
from tests.cancel.kit import (
    Delegate,
    Job,
    Nap,
    Parent,
    Stop,
    Team,
    eventually,
    marked,
    rows,
    sql,
)


def working(n: int = 1) -> None:
    eventually(lambda: len([m for m in kit.marks() if m.name == "work"]) >= n, what="working")


def actor_row(dsn: str, id: str) -> tuple[str, int, str | None]:
    [(status, restarts, exit)] = sql(
        dsn, "SELECT status, restarts, reason->>'exit' FROM actors WHERE id = %s", id
    )
    return status, restarts, exit


def exits_handled(dsn: str, supervisor: str) -> bool:
    """Whether ``supervisor`` was told of a child's exit and has handled every one so far."""
    states = [
        state
        for (state,) in sql(
            dsn,
            "SELECT state FROM promises WHERE recipient = %s "
            "AND tags->>'promissory:type' = 'ChildExit'",
            supervisor,
        )
    ]
    return bool(states) and "pending" not in states


def test_child_canceled_is_not_child_failed() -> None:
    assert not issubclass(ChildCanceledError, ChildFailedError)
    assert not issubclass(ChildFailedError, ChildCanceledError)


def test_a_parent_sees_its_childs_canceled_message_as_child_canceled(rt: Runtime, dsn: str) -> None:
    parent = rt.spawn(Parent, id="p1")
    reply = parent.ask(Delegate(child="c", job=Job(1)), id="p1/m")
    working()
    # The call is the parent's second step: the child's message is p1/m/2.
    [(call_id, recipient)] = sql(
        dsn, "SELECT id, recipient FROM promises WHERE kind = 'message' AND recipient = 'p1/c'"
    )
    assert call_id == "p1/m/2"
    assert rt.cancel(call_id, reason="not needed")
    assert reply.get(timeout=10) == "ChildCanceledError p1/c: child 'p1/c' was canceled (p1/m/2)"
    # The child cleaned up once; it is still alive (only its message was canceled).
    eventually(lambda: [m for m in kit.marks() if m.name == "cleanup"])
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == ["p1/m/2"]
    assert actor_row(dsn, "p1/c")[:2] == ("running", 0)
    kit.wait_quiet(dsn, "p1/m")


def test_a_parent_sees_its_child_actor_canceled_as_child_canceled(rt: Runtime, dsn: str) -> None:
    parent = rt.spawn(Parent, id="p2")
    reply = parent.ask(Delegate(child="c", job=Job(1)), id="p2/m")
    working()
    # Canceling the actor cancels its pending messages, then stops it.
    assert rt.cancel("p2/c", reason="retired")
    assert reply.get(timeout=10) == "ChildCanceledError p2/c: child 'p2/c' was canceled (p2/m/2)"
    eventually(lambda: actor_row(dsn, "p2/c")[0] == "stopped")
    assert actor_row(dsn, "p2/c") == ("stopped", 0, "shutdown")
    assert [
        (state, value["message"])
        for state, value in sql(dsn, "SELECT state, value FROM promises WHERE id = 'p2/m/2'")
    ] == [("rejected_canceled", "retired")]


def test_a_childs_message_that_times_out_is_child_canceled_too(rt: Runtime, dsn: str) -> None:
    parent = rt.spawn(Parent, id="p3")
    reply = parent.ask(Delegate(child="c", nap=Nap(30), timeout=0.3), id="p3/m")
    assert reply.get(timeout=10) == "ChildCanceledError p3/c: child 'p3/c' was timed out (p3/m/2)"
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'p3/m/2'")
    assert state == "rejected_timedout"
    # The child saw the deadline (as `Canceled`, with `deadline` set) and cleaned up, once.
    eventually(lambda: [m for m in kit.marks() if m.name == "cleanup"])
    time.sleep(0.2)
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == ["p3/m/2"]
    assert [m.key for m in kit.marks() if m.name == "cancelled"] == [
        "p3/m/2 deadline=True reason=the deadline of p3/m/2 passed"
    ]
    assert actor_row(dsn, "p3/c")[:2] == ("running", 0)
    assert [m for m in kit.marks() if m.name == "after"] == []
    kit.wait_quiet(dsn, "p3/m")


def test_a_child_that_crashes_and_is_given_up_is_child_failed(rt: Runtime, dsn: str) -> None:
    parent = rt.spawn(Parent, id="p4")
    reply = parent.ask(Delegate(child="c", crash=True, restart="temporary"), id="p4/m")
    assert reply.get(timeout=10) == "ChildFailedError p4/c: RuntimeError"
    assert actor_row(dsn, "p4/c")[0] == "failed"


def test_a_canceled_supervised_child_is_not_restarted_when_transient(rt: Runtime, dsn: str) -> None:
    sup = SupervisorRef(rt.spawn(Team, id="team"), timeout=15)
    assert [c.status for c in sup.which_children()] == ["running", "running"]
    # A transient child that ends its actor when canceled (as agent runs do) exits with
    # `shutdown`: its supervisor does not restart it.
    reply = rt.ref("team/transient").ask(Stop(), id="team/transient/stop")
    working()
    assert rt.cancel("team/transient/stop", reason="enough")
    with pytest.raises(PromiseCanceledError):
        reply.get(timeout=10)
    eventually(lambda: actor_row(dsn, "team/transient")[0] == "stopped", what="stopped")
    eventually(lambda: exits_handled(dsn, "team"), what="the supervisor handled the exit")
    assert actor_row(dsn, "team/transient") == ("stopped", 0, "shutdown")
    assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [
        ("transient", "stopped", 0),
        ("permanent", "running", 0),
    ]
    assert [m.key for m in kit.marks() if m.name == "cleanup"] == ["team/transient/stop"]
    # A permanent child canceled so is restarted (as after any `shutdown` exit).
    reply = rt.ref("team/permanent").ask(Stop(), id="team/permanent/stop")
    working(2)
    assert rt.cancel("team/permanent/stop")
    with pytest.raises(PromiseCanceledError):
        reply.get(timeout=10)
    eventually(
        lambda: [(c.status, c.restarts) for c in sup.which_children()][1] == ("running", 1),
        what="permanent restarted",
    )
    assert actor_row(dsn, "team/transient")[0] == "stopped"
    assert actor_row(dsn, "team")[0] == "running"


def test_canceling_a_supervised_transient_child_actor_does_not_restart_it(
    rt: Runtime, dsn: str
) -> None:
    sup = SupervisorRef(rt.spawn(Team, id="team2"), timeout=15)
    sup.which_children()
    reply = rt.ref("team2/transient").ask(Job(1), id="team2/transient/job")
    working()
    assert rt.cancel("team2/transient", reason="retired")
    with pytest.raises(PromiseCanceledError, match="retired"):
        reply.get(timeout=10)
    eventually(lambda: actor_row(dsn, "team2/transient")[0] == "stopped", what="stopped")
    time.sleep(0.3)  # nothing to wait for: a canceled actor's end sends no exit; none follows
    assert actor_row(dsn, "team2/transient") == ("stopped", 0, "shutdown")
    assert [(c.id, c.status) for c in sup.which_children()] == [
        ("transient", "stopped"),
        ("permanent", "running"),
    ]


def test_a_canceled_sub_agent_is_an_error_result_for_its_parent_which_goes_on(
    rt: Runtime, dsn: str
) -> None:
    leaf = Agent(
        "lone_leaf",
        "Sleep.",
        marked(
            "lone_leaf",
            [
                reply("", call("sleepy", "s1", seconds=30.0), call("sleepy", "s2", seconds=31.0)),
                "never",
            ],
        ),
        tools=[kit.sleepy],
    )
    lead = Agent(
        "lone_lead",
        "Delegate.",
        marked("lone_lead", [reply("", call("leaf", "c1", input="go")), "went on"]),
        tools=[leaf.as_tool(name="leaf")],
    )
    run = "agent/run/lone"
    handle = rt.start(lead, "go", id=run)
    eventually(lambda: len([m for m in kit.marks() if m.name == "tool:sleepy"]) == 2)
    sub = message_of(rows(dsn, run), "leaf")
    assert rt.cancel(sub, reason="too slow")
    # Only the sub-agent was canceled: the lead gets an error result and goes on.
    assert handle.result(timeout=10) == "went on"
    [asked] = lead.model.inner.requests[1:]  # type: ignore[attr-defined]
    assert asked.messages[-1].tool_results == [
        ToolResult(
            call_id="c1",
            name="leaf",
            content=f"the leaf agent was canceled: child '{run}/t1-0-leaf' was canceled ({sub})",
            is_error=True,
        )
    ]
    sub_rows = check_canceled(dsn, sub, actors=False)
    assert canceled_calls(sub_rows, sub) == canceled_answers([("s1", "sleepy"), ("s2", "sleepy")])
    # The transient sub-agent ended as a shutdown and was not restarted. Its end is its own:
    # it replays the canceled message to clean up, then stops, while the lead (told at the
    # cancel's commit) may have finished first.
    leaf_id = f"{run}/t1-0-leaf"
    eventually(lambda: actor_row(dsn, leaf_id)[0] == "stopped", what="the sub-agent stopped")
    assert actor_row(dsn, leaf_id) == ("stopped", 0, "shutdown")
