"""Starting a run id that exists says so (a log line, ``reused``), and a run keeps the name of
its model, so a resume or a recovery on another model says so too (at WARNING, both names)."""

from __future__ import annotations

import logging
import threading

import msgspec
import pytest

from promissory import Context
from promissory.agents import (
    Agent,
    FunctionModel,
    ModelRequest,
    RunResult,
    ScriptedModel,
    call,
    reply as answer,
    tool,
)
from promissory.errors import PromiseCanceledError
from promissory.runtime import Runtime
from tests.actors.kit import eventually, sql


def test_starting_a_finished_run_id_again_returns_its_kept_result_flagged_reused_and_logs_it(
    rt: Runtime, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedModel(["first answer"])
    agent = Agent("rerun_finished", "Answer.", model)
    first = rt.start(agent, "q", id="agent/run/again")
    assert first.details(timeout=15) == RunResult(
        output="first answer", usage=first.details().usage, turns=1, stop="final_answer"
    )
    assert not first.reused and not first.details().reused

    with caplog.at_level(logging.INFO, logger="promissory.agents"):
        second = rt.start(agent, "another question", id="agent/run/again")
        details = second.details(timeout=15)

    assert second.reused and details.reused
    assert details.output == "first answer"
    assert model.calls == 1  # nothing ran again
    [line] = [r for r in caplog.records if r.name == "promissory.agents" and "again" in r.message]
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        "run agent/run/again exists already (resolved): its kept outcome is returned and "
        "nothing runs again; to run this id anew, forget it first (promissory forget "
        "agent/run/again, or Store.forget)"
    )
    assert rt.run(agent, "q", id="agent/run/again") == "first answer"


def test_the_reused_flag_is_never_stored_and_old_results_decode(rt: Runtime, dsn: str) -> None:
    agent = Agent("rerun_stored", "Answer.", ScriptedModel(["kept"]))
    rt.start(agent, "q", id="agent/run/stored").details(timeout=15)
    rt.start(agent, "q", id="agent/run/stored").details(timeout=15)

    [(value,)] = sql(dsn, "SELECT value FROM promises WHERE id = 'agent/run/stored'")
    assert "reused" not in value
    # A value kept before the flag existed has no such field: it decodes, not reused.
    old = msgspec.json.decode(msgspec.json.encode(value), type=RunResult)
    assert old.output == "kept" and old.reused is False


def test_starting_a_run_id_that_is_under_way_joins_it_flagged_reused(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    go = threading.Event()

    def slow(request: ModelRequest) -> str:
        go.wait(10)
        return "done at last"

    agent = Agent("rerun_joining", "Answer.", FunctionModel(slow))
    first = rt.start(agent, "q", id="agent/run/joined")
    with caplog.at_level(logging.INFO, logger="promissory.agents"):
        second = rt.start(agent, "q", id="agent/run/joined")
    go.set()

    assert second.reused and not first.reused
    assert second.details(timeout=15).output == "done at last"
    assert second.details().reused and not first.details().reused
    assert any(
        r.getMessage() == "run agent/run/joined exists already and is under way: joining it"
        for r in caplog.records
    )


def test_a_run_keeps_the_name_of_the_model_it_was_started_with(rt: Runtime, dsn: str) -> None:
    agent = Agent("rerun_named", "Answer.", ScriptedModel(["ok"], name="scripted:alpha"))
    rt.run(agent, "q", id="agent/run/named", timeout=15)

    assert sql(dsn, "SELECT param->>'model' FROM promises WHERE id = 'agent/run/named'") == [
        ("scripted:alpha",)
    ]


# -- the model at resume and recovery ----------------------------------------------------------


@tool
def wait_for_approval(ctx: Context, what: str) -> str:
    """Wait for a person to approve.

    Args:
        what: what to approve.
    """
    return str(ctx.promise(id=f"approvals/rerun/{ctx.message_id}").result())


def agents(record: logging.LogRecord) -> bool:
    """A word of ``promissory.agents`` about a run (not, say, an agent defined again)."""
    return record.name == "promissory.agents" and record.getMessage().startswith("run ")


def approve(rt: Runtime, run_id: str) -> None:
    """Resolve the approval ``run_id`` waits on, once it waits."""
    assert rt.store is not None
    store = rt.store
    eventually(lambda: store.find(f"approvals/rerun/{run_id}"), what=f"{run_id}'s approval")
    store.resolve(f"approvals/rerun/{run_id}", "yes")


def _asks_then_answers(name: str) -> FunctionModel:
    def answer_(request: ModelRequest) -> object:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn == 0:
            return answer("", call("wait_for_approval", "w1", what="x"))
        return f"answered by {name}"

    return FunctionModel(answer_, name=name)  # type: ignore[arg-type]


def test_resuming_a_run_on_another_model_warns_naming_both_and_goes_on(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    first = Agent("rerun_switch", "Ask.", _asks_then_answers("model-a"), tools=[wait_for_approval])
    handle = rt.start(first, "q", id="agent/run/switch")
    eventually(lambda: rt.store and rt.store.find("approvals/rerun/agent/run/switch"))
    assert rt.cancel("agent/run/switch")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=15)
    # The agent is defined again, in code, with another model.
    Agent("rerun_switch", "Ask.", _asks_then_answers("model-b"), tools=[wait_for_approval])

    with caplog.at_level(logging.INFO, logger="promissory.agents"):
        resumed = rt.resume("agent/run/switch")

    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and agents(r)]
    assert warning.getMessage() == (
        "run agent/run/switch was started with model model-a; it is resumed with model "
        "model-b, agent rerun_switch's model now"
    )
    approve(rt, resumed.id)  # it goes on from its last whole turn: the first, asking again
    assert resumed.result(timeout=15) == "answered by model-b"


def test_resuming_a_run_on_its_own_model_says_nothing(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent("rerun_same", "Ask.", _asks_then_answers("model-a"), tools=[wait_for_approval])
    handle = rt.start(agent, "q", id="agent/run/same")
    eventually(lambda: rt.store and rt.store.find("approvals/rerun/agent/run/same"))
    rt.cancel("agent/run/same")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=15)

    with caplog.at_level(logging.WARNING):
        resumed = rt.resume("agent/run/same")
        approve(rt, resumed.id)
        assert resumed.result(timeout=15) == "answered by model-a"

    assert [r for r in caplog.records if r.levelno >= logging.WARNING and agents(r)] == []


def test_a_run_recovered_on_another_model_warns_once_naming_both(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent("rerun_recover", "Ask.", _asks_then_answers("model-a"), tools=[wait_for_approval])
    with Runtime(dsn) as rt:
        rt.start(agent, "q", id="agent/run/recovered")
        eventually(lambda: rt.store and rt.store.find("approvals/rerun/agent/run/recovered"))
    Agent("rerun_recover", "Ask.", _asks_then_answers("model-b"), tools=[wait_for_approval])

    with caplog.at_level(logging.WARNING), Runtime(dsn) as rt:
        assert rt.store is not None
        rt.store.resolve("approvals/rerun/agent/run/recovered", "yes")
        handle = rt.start(agent, "q", id="agent/run/recovered")
        assert handle.result(timeout=15) == "answered by model-b"

    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and agents(r)
    ]
    assert warnings == [
        "run agent/run/recovered was started with model model-a and goes on with model "
        "model-b, agent rerun_recover's model now"
    ]
