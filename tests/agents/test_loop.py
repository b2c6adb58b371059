"""The agent loop with scripted and function models: turns, tools, stops, output, durability.

Agents are defined inside each test (their names are unique across the suite: the registry is
per process and keeps the newest definition of a name). A ``ScriptedModel`` answers turn by
turn and records each request, so a test reads what the loop sent the model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Literal

import msgspec
import pytest

from promissory.actors import Context, RetryPolicy, current_step
from promissory.agents import (
    Agent,
    CostBudget,
    FunctionModel,
    MaxTurns,
    Message,
    ModelRequest,
    ModelResponse,
    NoToolCalls,
    OutputInvalidError,
    Predicate,
    Prices,
    RunContext,
    RunResult,
    RunView,
    ScriptedModel,
    TokenBudget,
    Tool,
    ToolCall,
    ToolCalled,
    ToolResult,
    ToolSpec,
    Usage,
    call,
    reply,
    tool,
)
from promissory.errors import InvalidInputError, NondeterminismError
from promissory.runtime import Runtime
from tests.actors.kit import eventually, sql


def run(rt: Runtime, agent: Agent, task: Any, id: str) -> RunResult:
    """Run ``agent`` on ``task`` to its end and return the whole result."""
    details: RunResult = rt.start(agent, task, id=id).details(timeout=30)
    return details


def results_in(request: ModelRequest) -> list[ToolResult]:
    """The tool results of the last message of a request."""
    last = request.messages[-1]
    assert last.role == "tool", last
    return last.tool_results


class Calls:
    """Thread-safe record of tool calls, and how many ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[Any] = []
        self.active = 0
        self.most = 0

    def enter(self, item: Any) -> None:
        with self.lock:
            self.log.append(item)
            self.active += 1
            self.most = max(self.most, self.active)

    def leave(self) -> None:
        with self.lock:
            self.active -= 1


# -- turns and tools --------------------------------------------------------------------------


def test_several_turns_with_sync_and_async_tools(rt: Runtime) -> None:
    seen: list[Any] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        seen.append(("add", a, b))
        return a + b

    async def shout(text: str) -> str:
        """Shout a text."""
        await asyncio.sleep(0.01)
        seen.append(("shout", text))
        return text.upper()

    model = ScriptedModel(
        [
            reply("Adding.", call("add", "c1", a=2, b=3)),
            reply("", call("shout", "c2", text="five"), call("add", "c3", a=5, b=5)),
            "It is FIVE, then 10.",
        ]
    )
    agent = Agent("loop_turns", "You compute.", model, tools=[add, shout])
    result = run(rt, agent, "Add 2 and 3, shout it, add 5 and 5.", "agent/run/turns")
    assert result.output == "It is FIVE, then 10."
    assert (result.turns, result.stop) == (3, "final_answer")
    assert result.usage == Usage(requests=3)
    model.assert_used_up()
    assert sorted(seen) == [("add", 2, 3), ("add", 5, 5), ("shout", "five")]
    first, second, third = model.requests
    assert first.system == "You compute."
    assert first.messages == [Message.user("Add 2 and 3, shout it, add 5 and 5.")]
    assert [t.name for t in first.tools] == ["add", "shout"]
    assert second.messages[1] == Message.assistant(
        "Adding.", [ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3})]
    )
    assert second.messages[2] == Message(
        "tool", [ToolResult(call_id="c1", name="add", content="5")]
    )
    assert len(third.messages) == 5
    assert results_in(third) == [
        ToolResult(call_id="c2", name="shout", content="FIVE"),
        ToolResult(call_id="c3", name="add", content="10"),
    ]


def test_tool_results_that_are_not_text_go_to_the_model_as_json(rt: Runtime) -> None:
    class Row(msgspec.Struct):
        id: int
        tags: list[str]

    def rows(n: int) -> list[dict[str, Any]]:
        """Some rows."""
        return [msgspec.to_builtins(Row(i, ["x"] * i)) for i in range(n)]

    model = ScriptedModel([reply("", call("rows", "c1", n=2)), "ok"])
    run(rt, Agent("loop_json", "", model, tools=[rows]), "rows", "agent/run/json")
    [result] = results_in(model.requests[1])
    assert json.loads(result.content) == [{"id": 0, "tags": []}, {"id": 1, "tags": ["x"]}]


class Place(msgspec.Struct):
    lat: float
    lon: float


def forecast(
    city: str,
    days: int = 3,
    unit: Literal["c", "f"] = "c",
    hours: list[int] | None = None,
    at: Place | None = None,
) -> dict[str, float]:
    """Forecast the weather
    for a city.

    More text that is not the summary.

    Args:
        city: the city's name.
        days (int): how many days ahead,
            at most ten.
        unit: Celsius or Fahrenheit.

    Returns:
        the forecast.
    """
    return {"high": 20.0}


def test_a_tools_schema_comes_from_its_type_hints_and_google_docstring() -> None:
    t = Tool(forecast)
    assert (t.name, t.description, t.durable) == (
        "forecast",
        "Forecast the weather for a city.",
        False,
    )
    assert t.returns == dict[str, float]
    assert t.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "the city's name."},
            "days": {
                "type": "integer",
                "default": 3,
                "description": "how many days ahead, at most ten.",
            },
            "unit": {"enum": ["c", "f"], "default": "c", "description": "Celsius or Fahrenheit."},
            "hours": {
                "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
                "default": None,
            },
            "at": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}], "default": None},
        },
        "required": ["city"],
        "additionalProperties": False,
        "$defs": {
            "Place": {
                "title": "Place",
                "type": "object",
                "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                "required": ["lat", "lon"],
            }
        },
    }
    assert t.spec() == ToolSpec("forecast", "Forecast the weather for a city.", t.parameters)
    assert t.parse({"city": "Oslo", "at": {"lat": 59.9, "lon": 10.7}}) == {
        "city": "Oslo",
        "days": 3,
        "unit": "c",
        "hours": None,
        "at": Place(59.9, 10.7),
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"city": 1}, "Expected `str`, got `int` - at `$.city`"),
        ({}, "Object missing required field `city`"),
        ({"city": "x", "zzz": 1}, "Object contains unknown field `zzz`"),
        ({"city": "x", "unit": "k"}, "Invalid enum value 'k' - at `$.unit`"),
    ]
    for bad, why in cases:
        with pytest.raises(InvalidInputError, match="invalid arguments for forecast") as info:
            t.parse(bad)
        assert why in str(info.value)


def test_tool_options_and_durable_tools() -> None:
    @tool(name="lookup-v2", description="Look up, better.", retry=RetryPolicy(max_attempts=2))
    def lookup(key: str) -> str:
        """Look up."""
        return key

    assert lookup.retry is not None
    assert (lookup.name, lookup.description, lookup.retry.max_attempts) == (
        "lookup-v2",
        "Look up, better.",
        2,
    )
    bare = tool(lookup.fn)
    assert (bare.name, bare.description) == ("lookup", "Look up.")
    durable = Tool(approve)
    assert durable.durable
    assert durable.parameters["properties"] == {
        "action": {"type": "string", "description": "what to do."}
    }
    with pytest.raises(InvalidInputError, match="tool name"):
        Tool(lookup.fn, name="no spaces")

    def star(*args: int) -> int:
        return 0

    with pytest.raises(InvalidInputError, match=r"\*args"):
        Tool(star)
    with pytest.raises(InvalidInputError, match="two tools named"):
        Agent("loop_twice", "", ScriptedModel(["x"]), tools=[lookup.fn, lookup.fn])


def test_bad_arguments_become_error_results_for_the_model(rt: Runtime) -> None:
    ran: list[Any] = []

    def add(a: int, b: int) -> int:
        """Add."""
        ran.append((a, b))
        return a + b

    model = ScriptedModel(
        [
            reply(
                "",
                call("add", "c1", a="two", b=3),
                call("add", "c2", a=1),
                call("add", "c3", a=1, b=2, c=3),
                ToolCall(id="c4", name="add", raw_arguments='{"a": 1, "b":'),
                call("add", "c5", a=1, b=1),
            ),
            "I will try again later.",
        ]
    )
    result = run(rt, Agent("loop_badargs", "", model, tools=[add]), "add", "agent/run/badargs")
    assert result.output == "I will try again later."
    assert ran == [(1, 1)]
    got = results_in(model.requests[1])
    assert [(r.call_id, r.is_error) for r in got] == [
        ("c1", True),
        ("c2", True),
        ("c3", True),
        ("c4", True),
        ("c5", False),
    ]
    assert got[0].content == "invalid arguments for add: Expected `int`, got `str` - at `$.a`"
    assert got[1].content == "invalid arguments for add: Object missing required field `b`"
    assert got[2].content == "invalid arguments for add: Object contains unknown field `c`"
    assert got[3].content == 'the arguments are not a JSON object: {"a": 1, "b":'
    assert got[4].content == "2"


def test_an_unknown_tool_is_an_error_result_not_a_crash(rt: Runtime) -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = ScriptedModel(
        [reply("", call("delete_everything", "c1"), call("add", "c2", a=1, b=2)), "Sorry."]
    )
    result = run(rt, Agent("loop_unknown", "", model, tools=[add]), "x", "agent/run/unknown")
    assert result.output == "Sorry."
    assert results_in(model.requests[1]) == [
        ToolResult(
            call_id="c1",
            name="delete_everything",
            content="unknown tool 'delete_everything'; the tools are: add",
            is_error=True,
        ),
        ToolResult(call_id="c2", name="add", content="3"),
    ]


def test_a_tool_that_keeps_failing_is_an_error_result_after_its_retries(
    rt: Runtime, dsn: str
) -> None:
    tries: list[tuple[str, int]] = []

    @tool(retry=RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0.0))
    def flaky(x: int) -> int:
        """Fails."""
        step = current_step()
        assert step is not None
        tries.append((step.idempotency_key, step.attempt))
        raise RuntimeError(f"boom {x}")

    @tool(retry=RetryPolicy(max_attempts=5, initial_interval=0.01, non_retryable=("ValueError",)))
    def picky(x: int) -> int:
        """Fails for good."""
        tries.append(("picky", x))
        raise ValueError("not that")

    model = ScriptedModel(
        [reply("", call("flaky", "c1", x=1), call("picky", "c2", x=2)), "Both failed."]
    )
    agent = Agent("loop_flaky", "", model, tools=[flaky, picky])
    assert run(rt, agent, "x", "agent/run/flaky").output == "Both failed."
    assert sorted(tries, key=str) == sorted(
        [
            ("agent/run/flaky/2", 1),
            ("agent/run/flaky/2", 2),
            ("agent/run/flaky/2", 3),
            ("picky", 2),
        ],
        key=str,
    )
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="flaky", content="RuntimeError: boom 1", is_error=True),
        ToolResult(call_id="c2", name="picky", content="ValueError: not that", is_error=True),
    ]
    rows = sql(
        dsn,
        "SELECT id, state, attempt FROM promises WHERE id IN (%s, %s) ORDER BY id",
        "agent/run/flaky/2",
        "agent/run/flaky/3",
    )
    assert rows == [("agent/run/flaky/2", "rejected", 3), ("agent/run/flaky/3", "rejected", 1)]


def test_a_tool_that_fails_once_succeeds_on_retry_with_the_same_key(rt: Runtime) -> None:
    keys: list[str] = []

    @tool(retry=RetryPolicy(max_attempts=3, initial_interval=0.01))
    def once(x: int) -> int:
        """Fails the first time."""
        step = current_step()
        assert step is not None
        keys.append(step.idempotency_key)
        if len(keys) == 1:
            raise ConnectionError("blip")
        return x * 2

    model = ScriptedModel([reply("", call("once", "c1", x=21)), "42"])
    assert (
        run(rt, Agent("loop_once", "", model, tools=[once]), "x", "agent/run/once").output == "42"
    )
    assert keys == ["agent/run/once/2", "agent/run/once/2"]
    assert results_in(model.requests[1]) == [ToolResult(call_id="c1", name="once", content="42")]


# -- concurrency ------------------------------------------------------------------------------


def test_tool_calls_of_one_turn_run_concurrently_and_return_in_the_models_order(
    rt: Runtime,
) -> None:
    barrier = threading.Barrier(2, timeout=5)
    finished: list[str] = []

    def slow(x: int) -> str:
        """Meets fast, then takes its time."""
        barrier.wait()  # passes only if fast runs at the same time
        time.sleep(0.2)
        finished.append("slow")
        return f"slow {x}"

    async def fast(x: int) -> str:
        """Meets slow, then returns at once."""
        await asyncio.to_thread(barrier.wait)
        finished.append("fast")
        return f"fast {x}"

    model = ScriptedModel([reply("", call("slow", "c1", x=1), call("fast", "c2", x=2)), "done"])
    agent = Agent("loop_parallel", "", model, tools=[slow, fast])
    assert run(rt, agent, "x", "agent/run/parallel").output == "done"
    assert finished == ["fast", "slow"]
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="slow", content="slow 1"),
        ToolResult(call_id="c2", name="fast", content="fast 2"),
    ]


def test_max_concurrency_one_runs_the_calls_one_at_a_time_in_order(rt: Runtime) -> None:
    calls = Calls()

    def work(n: int) -> int:
        """Works a while."""
        calls.enter(n)
        time.sleep(0.03)
        calls.leave()
        return n

    model = ScriptedModel([reply("", *(call("work", f"c{n}", n=n) for n in range(4))), "done"])
    agent = Agent("loop_serial", "", model, tools=[work], max_concurrency=1)
    run(rt, agent, "x", "agent/run/serial")
    assert calls.log == [0, 1, 2, 3]
    assert calls.most == 1
    assert [r.content for r in results_in(model.requests[1])] == ["0", "1", "2", "3"]


def test_max_concurrency_bounds_how_many_calls_run_at_once(rt: Runtime) -> None:
    calls = Calls()
    barrier = threading.Barrier(2, timeout=5)

    def work(n: int) -> int:
        """Works in pairs."""
        calls.enter(n)
        barrier.wait()  # two at a time get through
        time.sleep(0.05)
        calls.leave()
        return n * n

    model = ScriptedModel([reply("", *(call("work", f"c{n}", n=n) for n in range(6))), "done"])
    agent = Agent("loop_bounded", "", model, tools=[work], max_concurrency=2)
    run(rt, agent, "x", "agent/run/bounded")
    assert calls.most == 2
    assert [r.content for r in results_in(model.requests[1])] == ["0", "1", "4", "9", "16", "25"]
    assert not any(r.is_error for r in results_in(model.requests[1]))


# -- stop conditions --------------------------------------------------------------------------


class Pings:
    def __init__(self) -> None:
        self.count = 0

    def tool(self) -> Tool:
        def ping() -> str:
            """Ping."""
            self.count += 1
            return f"pong {self.count}"

        return Tool(ping)


def looping(texts: list[str], usage: Usage | None = None) -> ScriptedModel:
    """A model that calls ``ping`` in every turn, with these texts."""
    return ScriptedModel(
        [reply(t, call("ping", f"c{i}"), usage=usage) for i, t in enumerate(texts)]
    )


def test_no_tool_calls_is_the_default_stop(rt: Runtime) -> None:
    pings = Pings()
    model = ScriptedModel([reply("", call("ping", "c1")), reply("", call("ping", "c2")), "the end"])
    agent = Agent("stop_default", "", model, tools=[pings.tool()])
    assert isinstance(agent.stop, NoToolCalls)
    result = run(rt, agent, "x", "agent/run/stop-default")
    assert (result.output, result.turns, result.stop, pings.count) == (
        "the end",
        3,
        "final_answer",
        2,
    )


def test_max_turns(rt: Runtime) -> None:
    pings = Pings()
    model = looping(["one", "two", "three"])
    agent = Agent("stop_turns", "", model, tools=[pings.tool()], stop=MaxTurns(2))
    result = run(rt, agent, "x", "agent/run/stop-turns")
    # Stopped after the second answer, before its tool call ran.
    assert (result.output, result.turns, result.stop) == ("two", 2, "max_turns")
    assert (model.calls, pings.count) == (2, 1)
    with pytest.raises(ValueError):
        MaxTurns(0)


def test_a_text_answer_ends_the_run_whatever_the_stop_condition(rt: Runtime) -> None:
    model = ScriptedModel([reply("", call("ping", "c1")), "early"])
    agent = Agent("stop_early", "", model, tools=[Pings().tool()], stop=MaxTurns(5))
    result = run(rt, agent, "x", "agent/run/stop-early")
    assert (result.output, result.turns, result.stop) == ("early", 2, "final_answer")


def test_token_budget(rt: Runtime) -> None:
    pings = Pings()
    usage = Usage(requests=1, input_tokens=40, output_tokens=15, cache_read_tokens=5)
    model = looping(["one", "two", "three"], usage)
    agent = Agent("stop_tokens", "", model, tools=[pings.tool()], stop=TokenBudget(100))
    result = run(rt, agent, "x", "agent/run/stop-tokens")
    assert (result.output, result.turns, result.stop, pings.count) == ("two", 2, "token_budget", 1)
    assert result.usage == Usage(
        requests=2, input_tokens=80, output_tokens=30, cache_read_tokens=10
    )
    assert result.usage.total_tokens == 120


def test_cost_budget_with_prices(rt: Runtime) -> None:
    pings = Pings()
    usage = Usage(requests=1, input_tokens=1000, output_tokens=1000)
    model = looping(["one", "two", "three", "four"], usage)
    prices = Prices(input=10.0, output=30.0)  # dollars per million: 0.04 per turn here
    agent = Agent("stop_cost", "", model, tools=[pings.tool()], stop=CostBudget(0.1), prices=prices)
    result = run(rt, agent, "x", "agent/run/stop-cost")
    assert (result.output, result.turns, result.stop, pings.count) == ("three", 3, "cost_budget", 2)
    assert result.usage.cost == pytest.approx(0.12)
    assert Prices(cache_read=1.0, cache_write=2.0).cost(
        Usage(cache_read_tokens=1_000_000, cache_write_tokens=500_000)
    ) == pytest.approx(2.0)


def test_tool_called_makes_that_tools_result_the_output(rt: Runtime) -> None:
    pings = Pings()

    def finish(answer: str, confidence: float) -> dict[str, Any]:
        """Give the final answer."""
        return {"answer": answer, "confidence": confidence}

    model = ScriptedModel(
        [
            reply("", call("ping", "c1")),
            reply("", call("ping", "c2"), call("finish", "c3", answer="42", confidence=0.9)),
        ]
    )
    agent = Agent("stop_tool", "", model, tools=[pings.tool(), finish], stop=ToolCalled("finish"))
    result = run(rt, agent, "x", "agent/run/stop-tool")
    assert result.output == {"answer": "42", "confidence": 0.9}
    assert (result.turns, result.stop, pings.count) == (2, "tool:finish", 2)
    model.assert_used_up()


def test_predicate_on_the_answer(rt: Runtime) -> None:
    pings = Pings()
    model = looping(["working", "DONE: 7", "unreached"])
    stop = Predicate(lambda run: "DONE" in run.last_text, "done")
    agent = Agent("stop_pred", "", model, tools=[pings.tool()], stop=stop)
    result = run(rt, agent, "x", "agent/run/stop-pred")
    assert (result.output, result.turns, result.stop, pings.count) == ("DONE: 7", 2, "done", 1)


def test_predicate_on_the_tool_results(rt: Runtime) -> None:
    pings = Pings()
    model = looping(["looking", "looking again", "unreached"])

    def found(run: Any) -> bool:
        return run.phase == "tools" and any(
            r.content == "pong 2" for r in run.messages[-1].tool_results
        )

    agent = Agent("stop_found", "", model, tools=[pings.tool()], stop=Predicate(found, "found"))
    result = run(rt, agent, "x", "agent/run/stop-found")
    assert (result.turns, result.stop, pings.count) == (2, "found", 2)
    assert result.output == "looking again"  # the text of the last answer


def test_stop_conditions_compose_with_or(rt: Runtime) -> None:
    stop = ToolCalled("finish") | MaxTurns(3)
    assert repr(stop) == "ToolCalled('finish') | MaxTurns(3)"

    def finish(answer: str) -> str:
        """Finish."""
        return answer

    pings = Pings()
    model = looping(["a", "b", "c", "d"])
    agent = Agent("stop_or_turns", "", model, tools=[pings.tool(), finish], stop=stop)
    result = run(rt, agent, "x", "agent/run/stop-or-1")
    assert (result.output, result.turns, result.stop, pings.count) == ("c", 3, "max_turns", 2)

    model = ScriptedModel(
        [reply("", call("ping", "c1")), reply("", call("finish", "c2", answer="ok"))]
    )
    agent = Agent("stop_or_tool", "", model, tools=[Pings().tool(), finish], stop=stop)
    result = run(rt, agent, "x", "agent/run/stop-or-2")
    assert (result.output, result.turns, result.stop) == ("ok", 2, "tool:finish")


def test_stop_conditions_compose_with_and(rt: Runtime) -> None:
    pings = Pings()
    stop = MaxTurns(2) & Predicate(lambda run: "DONE" in run.last_text, "done")
    assert repr(stop) == "MaxTurns(2) & Predicate('done')"
    model = looping(["DONE too early", "not yet", "DONE now", "unreached"])
    agent = Agent("stop_and", "", model, tools=[pings.tool()], stop=stop)
    result = run(rt, agent, "x", "agent/run/stop-and")
    assert (result.output, result.turns, result.stop) == ("DONE now", 3, "max_turns & done")
    assert pings.count == 2


def test_composition_nests() -> None:
    stop = (MaxTurns(9) & TokenBudget(10)) | (CostBudget(1.0) & ToolCalled("x"))
    assert repr(stop) == "MaxTurns(9) & TokenBudget(10) | CostBudget(1.0) & ToolCalled('x')"
    last = reply("", call("x", "c1"))
    view = RunView(
        phase="tools",
        turns=1,
        usage=Usage(input_tokens=50, cost=2.0),
        messages=[last.message],
        last=last,
    )
    assert stop.check(view) == "cost_budget & tool:x"
    # MaxTurns is asked only after the model answered, not after the tools ran.
    assert stop.check(msgspec.structs.replace(view, turns=9, usage=Usage())) is None
    assert stop.check(msgspec.structs.replace(view, phase="model", turns=9)) == (
        "max_turns & token_budget"
    )


# -- structured output ------------------------------------------------------------------------


class City(msgspec.Struct):
    name: str
    population: int


def test_a_valid_structured_answer_is_decoded(rt: Runtime) -> None:
    model = ScriptedModel(['```json\n{"name": "Paris", "population": 2100000}\n```'])
    agent = Agent("out_valid", "Answer about cities.", model, output_type=City)
    handle = rt.start(agent, "Biggest city of France?", id="agent/run/out-valid")
    assert handle.result(timeout=30, type=City) == City("Paris", 2_100_000)
    assert handle.result(timeout=30) == {"name": "Paris", "population": 2_100_000}
    [request] = model.requests
    assert request.system.startswith("Answer about cities.\n\nGive your final answer as JSON only")
    assert json.dumps(msgspec.json.schema(City), separators=(",", ":")) in request.system
    assert request.output_schema == msgspec.json.schema(City)


def test_an_invalid_structured_answer_goes_back_as_a_correction(rt: Runtime) -> None:
    model = ScriptedModel(
        [
            "Paris, about two million.",
            '{"name": "Paris", "population": "lots"}',
            '{"name": "Paris", "population": 2100000}',
        ]
    )
    agent = Agent("out_fix", "", model, output_type=City, output_retries=2)
    result = run(rt, agent, "Biggest city of France?", "agent/run/out-fix")
    assert result.output == {"name": "Paris", "population": 2_100_000}
    assert (result.turns, result.stop) == (3, "final_answer")
    schema = msgspec.json.encode(msgspec.json.schema(City)).decode()
    first = model.requests[1].messages[-1]
    assert first.role == "user"
    assert first.text.startswith("That answer is not valid: JSON is malformed")
    assert first.text.endswith(f"Answer again with only JSON matching this schema: {schema}")
    second = model.requests[2].messages[-1]
    assert second == Message.user(
        "That answer is not valid: Expected `int`, got `str` - at `$.population`. Answer again "
        f"with only JSON matching this schema: {schema}"
    )
    assert [m.role for m in model.requests[2].messages] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_too_many_invalid_answers_fail_the_run(rt: Runtime, dsn: str) -> None:
    model = ScriptedModel(["nope", '{"name": 1}', "unreached"])
    agent = Agent("out_fail", "", model, output_type=City, output_retries=1)
    with pytest.raises(OutputInvalidError, match=r"did not fit City after 1 correction\(s\)"):
        rt.run(agent, "x", id="agent/run/out-fail", timeout=30)
    assert model.calls == 2
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'agent/run/out-fail'")
    assert state == "rejected"

    model = ScriptedModel(["nope"])
    agent = Agent("out_none", "", model, output_type=City, output_retries=0)
    with pytest.raises(OutputInvalidError, match="after 0 correction"):
        rt.run(agent, "x", id="agent/run/out-none", timeout=30)
    assert model.calls == 1


# -- instructions, input, usage ---------------------------------------------------------------


def test_instructions_as_a_function_of_the_run_context(rt: Runtime) -> None:
    def instructions(ctx: RunContext) -> str:
        return f"run={ctx.run_id} agent={ctx.agent} turn={ctx.turn} input={ctx.input!r}"

    model = ScriptedModel([reply("", call("ping", "c1")), "done"])
    agent = Agent("loop_instr", instructions, model, tools=[Pings().tool()])
    run(rt, agent, "hello", "agent/run/instr")
    assert [r.system for r in model.requests] == [
        "run=agent/run/instr agent=loop_instr turn=1 input='hello'",
        "run=agent/run/instr agent=loop_instr turn=2 input='hello'",
    ]


def test_a_task_that_is_not_text_goes_to_the_model_as_json(rt: Runtime) -> None:
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        seen.append(request)
        return "ok"

    model = FunctionModel(answer)
    agent = Agent("loop_input", lambda ctx: f"input is {sorted(ctx.input.items())}", model)
    assert run(rt, agent, {"q": "why", "n": 2}, "agent/run/input").output == "ok"
    [request] = seen
    assert request.system == "input is [('n', 2), ('q', 'why')]"
    assert json.loads(request.messages[0].text) == {"q": "why", "n": 2}
    assert model.calls == 1


def test_usage_is_summed_over_turns_and_sub_agents(rt: Runtime) -> None:
    lead_usage = Usage(requests=1, input_tokens=100, output_tokens=10, cache_read_tokens=50)
    sub_usage = Usage(requests=1, input_tokens=7, output_tokens=3, cache_write_tokens=2)
    sub = Agent(
        "usage_sub",
        "",
        ScriptedModel(
            [reply("", call("ping", "s1"), usage=sub_usage), reply("sub done", usage=sub_usage)]
        ),
        tools=[Pings().tool()],
        prices=Prices(input=1.0, output=2.0, cache_write=4.0),
    )
    lead = Agent(
        "usage_lead",
        "",
        ScriptedModel(
            [
                reply("", call("usage_sub", "c1", input="help"), usage=lead_usage),
                reply("", call("ping", "c2"), usage=lead_usage),
                reply("all done", usage=lead_usage),
            ]
        ),
        tools=[Pings().tool(), sub.as_tool()],
        prices=Prices(input=3.0, output=15.0, cache_read=0.3),
    )
    result = run(rt, lead, "x", "agent/run/usage")
    assert result.output == "all done"
    assert result.usage.requests == 5
    assert (
        result.usage.input_tokens,
        result.usage.output_tokens,
        result.usage.cache_read_tokens,
        result.usage.cache_write_tokens,
    ) == (314, 36, 150, 4)
    lead_cost = 3 * (100 * 3.0 + 10 * 15.0 + 50 * 0.3) / 1e6
    sub_cost = 2 * (7 * 1.0 + 3 * 2.0 + 2 * 4.0) / 1e6
    assert result.usage.cost == pytest.approx(lead_cost + sub_cost)


def test_token_budget_counts_sub_agents(rt: Runtime) -> None:
    big = Usage(requests=1, input_tokens=500)
    small = Usage(requests=1, input_tokens=10)
    sub = Agent("budget_sub", "", ScriptedModel([reply("spent a lot", usage=big)]))
    lead = Agent(
        "budget_lead",
        "",
        ScriptedModel(
            [
                reply("ask", call("helper", "c1", input="go"), usage=small),
                reply("unreached", usage=small),
            ]
        ),
        tools=[sub.as_tool(name="helper")],
        stop=TokenBudget(300),
    )
    # The lead's own tokens stay under the budget; the sub-agent's push it over.
    result = run(rt, lead, "x", "agent/run/budget")
    assert (result.output, result.turns, result.stop) == ("ask", 1, "token_budget")
    assert result.usage.input_tokens == 510


# -- the run in the store ---------------------------------------------------------------------


def test_the_runs_promise_holds_the_result_and_its_steps_are_under_its_id(
    rt: Runtime, dsn: str
) -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    def mul(a: int, b: int) -> int:
        """Multiply."""
        return a * b

    model = ScriptedModel(
        [
            reply("", call("add", "c1", a=2, b=3)),
            reply("", call("mul", "c2", a=5, b=4)),
            reply("It is 20.", usage=Usage(requests=1, input_tokens=9, output_tokens=4)),
        ]
    )
    agent = Agent("store_run", "Compute.", model, tools=[add, mul])
    assert rt.run(agent, "(2 + 3) * 4 ... UNIQUE-INPUT", id="agent/run/42", timeout=30) == (
        "It is 20."
    )
    [(state, value)] = sql(dsn, "SELECT state, value FROM promises WHERE id = 'agent/run/42'")
    assert state == "resolved"
    assert msgspec.convert(value, RunResult) == RunResult(
        output="It is 20.",
        usage=Usage(requests=3, input_tokens=9, output_tokens=4),
        turns=3,
        stop="final_answer",
    )
    steps = sql(
        dsn,
        "SELECT id, state, fingerprint, value FROM promises WHERE id LIKE 'agent/run/42/%%' "
        "ORDER BY created_at",
    )
    assert [(s[0], s[1], s[2].rsplit(":", 1)[0]) for s in steps] == [
        ("agent/run/42/1", "resolved", "step:model:store_run"),
        ("agent/run/42/2", "resolved", "step:tool:add"),
        ("agent/run/42/3", "resolved", "step:model:store_run"),
        ("agent/run/42/4", "resolved", "step:tool:mul"),
        ("agent/run/42/5", "resolved", "step:model:store_run"),
    ]
    values = [s[3] for s in steps]
    assert values[1] == 5 and values[3] == 20
    # Each model step keeps only what it added to the transcript: the model's answer.
    for value in values[0::2]:
        response = msgspec.convert(value, ModelResponse)
        assert response.message.role == "assistant"
        assert set(value) == {"message", "stop_reason", "usage", "model"}
    assert msgspec.convert(values[2], ModelResponse).message.tool_calls == [
        ToolCall(id="c2", name="mul", arguments={"a": 5, "b": 4})
    ]
    assert not any("UNIQUE-INPUT" in json.dumps(v) for v in values)


def test_a_handle_can_be_awaited_and_asked_whether_it_is_done(rt: Runtime) -> None:
    agent = Agent("loop_handle", "", ScriptedModel(["hi"]))
    handle = rt.start(agent, "x", id="agent/run/handle")
    assert repr(handle) == "RunHandle('agent/run/handle')"

    async def wait() -> Any:
        return await handle

    assert asyncio.run(wait()) == "hi"
    assert handle.done()


# -- replay -----------------------------------------------------------------------------------


def approve(ctx: Context, action: str) -> str:
    """Wait for a person to approve an action.

    Args:
        action: what to do.
    """
    decision = ctx.promise(id=f"approvals/{ctx.message_id}").result(dict)
    return f"{action}: {decision['answer']}"


def wait_for_promise(dsn: str, id: str) -> None:
    eventually(
        lambda: sql(dsn, "SELECT 1 FROM promises WHERE id = %s", id),
        timeout=10,
        what=f"promise {id} created",
    )


def test_a_replayed_run_does_not_call_the_model_again_for_kept_turns(rt: Runtime, dsn: str) -> None:
    pings = Pings()
    model = ScriptedModel(
        [
            reply("", call("ping", "c1"), call("approve", "c2", action="deploy")),
            reply("", call("ping", "c3")),
            "deployed",
        ]
    )
    agent = Agent("replay_kept", "", model, tools=[pings.tool(), approve])
    handle = rt.start(agent, "x", id="agent/run/replay")
    wait_for_promise(dsn, "approvals/agent/run/replay")
    eventually(lambda: rt.host.live_activations() == 0, what="the run suspended")
    assert (model.calls, pings.count) == (1, 1)
    assert rt.store is not None
    rt.store.resolve("approvals/agent/run/replay", {"answer": "yes"})
    assert handle.result(timeout=30) == "deployed"
    # The kept first turn and its ping were replayed from the journal, not run again.
    assert (model.calls, pings.count) == (3, 2)
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="ping", content="pong 1"),
        ToolResult(call_id="c2", name="approve", content="deploy: yes"),
    ]


def test_a_changed_prompt_on_replay_is_a_nondeterminism_error(rt: Runtime, dsn: str) -> None:
    model = ScriptedModel([reply("", call("approve", "c1", action="deploy")), "deployed"])
    agent = Agent("replay_changed", "The first prompt.", model, tools=[approve])
    handle = rt.start(agent, "x", id="agent/run/changed")
    wait_for_promise(dsn, "approvals/agent/run/changed")
    eventually(lambda: rt.host.live_activations() == 0, what="the run suspended")
    agent.instructions = "A second prompt."
    assert rt.store is not None
    rt.store.resolve("approvals/agent/run/changed", {"answer": "yes"})
    with pytest.raises(NondeterminismError) as info:
        handle.result(timeout=30)
    assert info.value.step_id == "agent/run/changed/1"
    assert "replay of step agent/run/changed/1" in str(info.value)
    assert model.calls == 1


def test_a_changed_tool_list_on_replay_is_a_nondeterminism_error(rt: Runtime, dsn: str) -> None:
    model = ScriptedModel([reply("", call("approve", "c1", action="deploy")), "deployed"])
    agent = Agent("replay_tools", "Same prompt.", model, tools=[approve])
    handle = rt.start(agent, "x", id="agent/run/tools-changed")
    wait_for_promise(dsn, "approvals/agent/run/tools-changed")
    eventually(lambda: rt.host.live_activations() == 0, what="the run suspended")
    extra = Pings().tool()
    agent.tools[extra.name] = extra
    assert rt.store is not None
    rt.store.resolve("approvals/agent/run/tools-changed", {"answer": "yes"})
    with pytest.raises(NondeterminismError) as info:
        handle.result(timeout=30)
    assert info.value.step_id == "agent/run/tools-changed/1"


def test_a_run_reaches_its_model_with_no_read_after_it_was_started(dsn: str) -> None:
    """rt.start keeps the run (its actor, then its task) and the actor's activation starts
    the task it was handed: no mailbox or journal read comes before the model is called."""
    seen: list[int] = []
    called = threading.Event()
    with Runtime(dsn) as rt:
        assert rt.store is not None
        store = rt.store

        def model(request: Any) -> str:
            seen.append(store.reads)
            called.set()
            return "done"

        agent = Agent("no-read-start", "Answer.", model=FunctionModel(model, name="m"))
        before = store.reads
        handle = rt.start(agent, "go")
        assert called.wait(30)  # waiting on the handle would read: not yet
        assert handle.result(timeout=30) == "done"
    assert seen == [before], f"{seen[0] - before} reads before the model was called"


@tool
def nap(seconds: float) -> str:
    """Sleep a while.

    Args:
        seconds: how long.
    """
    time.sleep(seconds)
    return "rested"


def test_a_run_handle_waited_on_by_several_threads_answers_each(rt: Runtime) -> None:
    # The handle keeps the reply of the send that started the run; one thread waits on it,
    # the others on replies of their own, and each gets the result.
    agent = Agent(
        "t-napper",
        "Rest, then say so.",
        ScriptedModel([reply("", call("nap", "n1", seconds=0.3)), reply("Rested.")]),
        tools=[nap],
    )
    handle = rt.start(agent, "rest", id="agent/run/napper")
    got: list[Any] = []
    waiters = [
        threading.Thread(target=lambda: got.append(handle.result(timeout=20))) for _ in range(4)
    ]
    for w in waiters:
        w.start()
    for w in waiters:
        w.join(30)
    assert got == ["Rested."] * 4
    assert handle.result(timeout=1) == "Rested."
