"""Sub-agents: ``agent.as_tool`` runs each call as a supervised child actor of the run."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from promissory.actors import Restart
from promissory.agents import (
    Agent,
    FunctionModel,
    ModelRequest,
    ModelResponse,
    RunResult,
    ScriptedModel,
    ToolResult,
    Usage,
    call,
    reply,
)
from promissory.errors import ChildFailedError, InvalidInputError, ModelError
from promissory.runtime import Runtime
from tests.actors.kit import sql

from .test_loop import results_in, run


def test_a_sub_agent_is_called_like_a_tool_and_runs_as_a_child_actor(rt: Runtime, dsn: str) -> None:
    researcher_model = ScriptedModel(["Durable actors keep promises in Postgres."])
    researcher = Agent("sub_researcher", "Find facts.", researcher_model)
    tool = researcher.as_tool(description="Ask the researcher.")
    assert tool.spec().parameters == {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "the task for the agent"}},
        "required": ["input"],
    }
    assert tool.child_spec.restart is Restart.TRANSIENT
    lead_model = ScriptedModel(
        [reply("", call("sub_researcher", "c1", input="What are durable actors?")), "Summary."]
    )
    lead = Agent("sub_lead", "Delegate.", lead_model, tools=[tool])
    result = run(rt, lead, "Explain durable actors.", "agent/run/sub")
    assert result.output == "Summary."
    assert lead_model.requests[0].tools[0].description == "Ask the researcher."
    # The sub-agent got the input the model wrote, as its own task.
    [asked] = researcher_model.requests
    assert asked.system == "Find facts."
    assert asked.messages[0].text == "What are durable actors?"
    # Its answer came back as the tool result.
    assert results_in(lead_model.requests[1]) == [
        ToolResult(
            call_id="c1", name="sub_researcher", content="Durable actors keep promises in Postgres."
        )
    ]
    child = "agent/run/sub/t1-0-sub_researcher"
    assert sql(dsn, "SELECT id, parent, kind FROM actors WHERE parent = 'agent/run/sub'") == [
        (child, "agent/run/sub", "agent:sub_researcher")
    ]
    # Its run is a message promise under the parent's id; its steps are under that.
    [(message, state, value)] = sql(
        dsn,
        "SELECT id, state, value FROM promises WHERE recipient = %s AND kind = 'message'",
        child,
    )
    assert message.startswith("agent/run/sub/") and state == "resolved"
    assert value["output"] == "Durable actors keep promises in Postgres."
    assert sql(dsn, "SELECT id FROM promises WHERE id LIKE %s", message + "/%") == [
        (message + "/1",)
    ]


def test_the_default_description_names_the_agent() -> None:
    agent = Agent("sub_named", "Find facts.", ScriptedModel(["x"]))
    tool = agent.as_tool()
    assert (tool.name, tool.description) == ("sub_named", "Ask the sub_named agent. Find facts.")
    assert agent.as_tool(name="other").name == "other"


def test_two_sub_agents_in_one_turn_run_concurrently(rt: Runtime, dsn: str) -> None:
    barrier = threading.Barrier(2, timeout=5)
    met: list[str] = []

    def meet(who: str) -> str:
        """Wait for the other sub-agent."""
        barrier.wait()  # passes only when both sub-agents are running at once
        met.append(who)
        return f"{who} met"

    def sub(name: str) -> Agent:
        model = ScriptedModel([reply("", call("meet", "m1", who=name)), f"{name} is done"])
        return Agent(name, "", model, tools=[meet])

    alpha, beta = sub("sub_alpha"), sub("sub_beta")
    lead_model = ScriptedModel(
        [
            reply("", call("sub_alpha", "c1", input="a"), call("sub_beta", "c2", input="b")),
            "both done",
        ]
    )
    lead = Agent("sub_pair", "", lead_model, tools=[alpha.as_tool(), beta.as_tool()])
    started = time.monotonic()
    assert run(rt, lead, "x", "agent/run/pair").output == "both done"
    assert time.monotonic() - started < 5, "the barrier timed out: they ran one after another"
    assert sorted(met) == ["sub_alpha", "sub_beta"]
    assert results_in(lead_model.requests[1]) == [
        ToolResult(call_id="c1", name="sub_alpha", content="sub_alpha is done"),
        ToolResult(call_id="c2", name="sub_beta", content="sub_beta is done"),
    ]
    children = sql(dsn, "SELECT id FROM actors WHERE parent = 'agent/run/pair' ORDER BY id")
    assert children == [
        ("agent/run/pair/t1-0-sub_alpha",),
        ("agent/run/pair/t1-1-sub_beta",),
    ]


def test_one_sub_agent_called_twice_in_a_turn_runs_as_two_children(rt: Runtime, dsn: str) -> None:
    def echo(request: ModelRequest) -> str:
        return f"echo: {request.messages[0].text}"

    echoer = Agent("sub_echo", "", FunctionModel(echo))
    lead_model = ScriptedModel(
        [
            reply("", call("sub_echo", "c1", input="one"), call("sub_echo", "c2", input="two")),
            reply("", call("sub_echo", "c3", input="three")),
            "done",
        ]
    )
    lead = Agent("sub_twice", "", lead_model, tools=[echoer.as_tool()])
    run(rt, lead, "x", "agent/run/twice")
    assert [r.content for r in results_in(lead_model.requests[1])] == ["echo: one", "echo: two"]
    assert [r.content for r in results_in(lead_model.requests[2])] == ["echo: three"]
    assert sql(dsn, "SELECT id FROM actors WHERE parent = 'agent/run/twice' ORDER BY id") == [
        ("agent/run/twice/t1-0-sub_echo",),
        ("agent/run/twice/t1-1-sub_echo",),
        ("agent/run/twice/t2-0-sub_echo",),
    ]


def test_a_sub_agent_with_bad_arguments_is_an_error_result(rt: Runtime, dsn: str) -> None:
    helper = Agent("sub_unused", "", ScriptedModel(["never"]))
    lead_model = ScriptedModel(
        [reply("", call("sub_unused", "c1", question="no input field")), "gave up"]
    )
    lead = Agent("sub_badargs", "", lead_model, tools=[helper.as_tool()])
    assert run(rt, lead, "x", "agent/run/sub-badargs").output == "gave up"
    assert results_in(lead_model.requests[1]) == [
        ToolResult(
            call_id="c1",
            name="sub_unused",
            content="invalid arguments for sub_unused: 'input' must be a string",
            is_error=True,
        )
    ]
    assert sql(dsn, "SELECT id FROM actors WHERE parent = 'agent/run/sub-badargs'") == []


class AlwaysFails:
    """A model whose every call fails with an error no retry can fix."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.lock = threading.Lock()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        with self.lock:
            self.calls += 1
        raise ModelError(f"{self.name}: HTTP 400: no such model", "bad_request", False, None, 400)


def failing_setup(name: str, *, raise_errors: bool) -> tuple[Agent, AlwaysFails, ScriptedModel]:
    broken_model = AlwaysFails(f"{name}_sub")
    broken = Agent(f"{name}_sub", "", broken_model)
    lead_model = ScriptedModel(
        [
            reply("", call(f"{name}_sub", "c1", input="try"), usage=Usage(requests=1)),
            "finished without it",
        ]
    )
    tool = broken.as_tool(restart="transient", intensity=2, period=30.0, raise_errors=raise_errors)
    lead = Agent(name, "", lead_model, tools=[tool])
    return lead, broken_model, lead_model


def child_row(dsn: str, parent: str) -> tuple[Any, ...]:
    [row] = sql(
        dsn,
        "SELECT id, status, restarts, jsonb_array_length(history), spec->>'restart', "
        "(spec->>'intensity')::int, reason->'error'->>'type' FROM actors WHERE parent = %s",
        parent,
    )
    return tuple(row)


def test_a_failing_sub_agent_is_restarted_then_given_up_and_the_parent_gets_an_error(
    rt: Runtime, dsn: str
) -> None:
    lead, broken_model, lead_model = failing_setup("sub_fails", raise_errors=False)
    result = run(rt, lead, "x", "agent/run/sub-fails")
    assert result == RunResult(
        output="finished without it", usage=Usage(requests=2), turns=2, stop="final_answer"
    )
    [error] = results_in(lead_model.requests[1])
    assert error.is_error and error.call_id == "c1"
    assert error.content == (
        "the sub_fails_sub agent failed: sub_fails_sub: HTTP 400: no such model"
    )
    # Restarted twice (the intensity), then given up; each restart tried the failed model
    # step again (under the attempt ids {step}~1, {step}~2): 1 + 2 calls of the model.
    child = "agent/run/sub-fails/t1-0-sub_fails_sub"
    assert child_row(dsn, "agent/run/sub-fails") == (
        child,
        "failed",
        2,
        2,
        "transient",
        2,
        "promissory.errors.ModelError",
    )
    assert broken_model.calls == 3
    [(message, state)] = sql(
        dsn,
        "SELECT id, state FROM promises WHERE recipient = %s AND kind = 'message'",
        child,
    )
    assert state == "rejected"
    steps = sql(dsn, "SELECT id, state FROM promises WHERE id LIKE %s ORDER BY seq", message + "/%")
    assert steps == [
        (f"{message}/1", "rejected"),
        (f"{message}/1~1", "rejected"),
        (f"{message}/1~2", "rejected"),
    ]


def test_raise_errors_makes_the_parent_run_fail_with_child_failed(rt: Runtime, dsn: str) -> None:
    lead, broken_model, lead_model = failing_setup("sub_raises", raise_errors=True)
    with pytest.raises(ChildFailedError) as info:
        rt.run(lead, "x", id="agent/run/sub-raises", timeout=30)
    assert info.value.child_id == "agent/run/sub-raises/t1-0-sub_raises_sub"
    assert "no such model" in str(info.value)
    assert lead_model.calls == 1  # the parent's loop ended where it awaited the child
    assert broken_model.calls == 3
    assert child_row(dsn, "agent/run/sub-raises")[1:3] == ("failed", 2)
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'agent/run/sub-raises'")
    assert state == "rejected"


def test_two_sub_agents_of_one_parent_keep_their_own_restart_policies(
    rt: Runtime, dsn: str
) -> None:
    """One passed as it is (the default policy: transient, 1 restart in 5 s), one attached
    as ``temporary``: both fail every time; the first is restarted once, the second never."""
    plain_model, temp_model = AlwaysFails("pol_plain"), AlwaysFails("pol_temp")
    plain = Agent("pol_plain", "", plain_model)
    temp = Agent("pol_temp", "", temp_model)
    lead_model = ScriptedModel(
        [
            reply("", call("pol_plain", "c1", input="a"), call("pol_temp", "c2", input="b")),
            "went on without them",
        ]
    )
    lead = Agent("pol_lead", "", lead_model, tools=[plain, temp.as_tool(restart="temporary")])
    result = run(rt, lead, "x", "agent/run/policies")
    assert result.output == "went on without them"
    errors = {r.call_id: r for r in results_in(lead_model.requests[1])}
    assert errors["c1"].is_error and errors["c2"].is_error
    rows = sql(
        dsn,
        "SELECT id, status, restarts, spec->>'restart' FROM actors WHERE parent = %s ORDER BY id",
        "agent/run/policies",
    )
    base = "agent/run/policies/t1"
    assert rows == [
        (f"{base}-0-pol_plain", "failed", 1, "transient"),
        (f"{base}-1-pol_temp", "failed", 0, "temporary"),
    ]
    assert (plain_model.calls, temp_model.calls) == (2, 1)


def test_something_that_is_not_a_tool_is_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="agent bad_tools: a tool must be a function"):
        Agent("bad_tools", "", ScriptedModel(["x"]), tools=[42])  # type: ignore[list-item]


# -- issue 14, item 13: a sub-agent under the name the model uses --------------------------------


def test_a_sub_agent_tool_is_offered_under_the_name_and_description_given(
    rt: Runtime,
) -> None:
    researcher = Agent("named_researcher", "Find facts.", ScriptedModel(["Facts."]))
    lead_model = ScriptedModel([reply("", call("research", "c1", input="X?")), "Done."])
    lead = Agent(
        "named_lead",
        "Delegate.",
        lead_model,
        tools=[researcher.as_tool(name="research", description="Find sources on a topic.")],
    )

    assert run(rt, lead, "go", "agent/run/named").output == "Done."

    [spec] = lead_model.requests[0].tools
    assert (spec.name, spec.description) == ("research", "Find sources on a topic.")
    assert results_in(lead_model.requests[1]) == [
        ToolResult(call_id="c1", name="research", content="Facts.")
    ]


def test_a_call_by_a_name_no_tool_has_gets_an_error_result_listing_the_tools(
    rt: Runtime,
) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    researcher = Agent("listed_researcher", "Find facts.", ScriptedModel(["never asked"]))
    lead_model = ScriptedModel(
        # The model calls the sub-agent by the agent's name, not the tool's.
        [reply("", call("listed_researcher", "c1", input="X?")), "Gave up."]
    )
    lead = Agent("listed_lead", "", lead_model, tools=[add, researcher.as_tool(name="research")])

    assert run(rt, lead, "go", "agent/run/listed").output == "Gave up."

    [result] = results_in(lead_model.requests[1])
    assert result.is_error
    assert result.content == "unknown tool 'listed_researcher'; the tools are: add, research"


def test_defining_an_agent_name_again_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    Agent("defined_twice", "First.", ScriptedModel(["x"]))

    with caplog.at_level("WARNING", logger="promissory"):
        Agent("defined_twice", "Second.", ScriptedModel(["y"]))

    [record] = [r for r in caplog.records if "defined_twice" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "defined again" in record.getMessage()
