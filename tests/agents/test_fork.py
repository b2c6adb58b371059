"""Forking a run: a new run reuses the source's kept steps before the cut (read, not run again
and not copied), runs the rest anew with the changes, and leaves the source as it was.

The source is a 10-step run: three turns of two tool calls each, then the answer (model steps
at positions 1, 4, 7, 10; tool steps at 2, 3, 5, 6, 8, 9). Forked at each step with another
prompt, the fork makes exactly the model and tool calls at and after the cut.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from promissory.actors import current_step
from promissory.agents import Agent, FunctionModel, ModelRequest, ModelResponse, call, reply, tool
from promissory.errors import InvalidInputError, PromiseNotFoundError
from promissory.runtime import Runtime
from tests.kit import sql

lock = threading.Lock()
model_calls: Counter[str] = Counter()
tool_calls: Counter[str] = Counter()
seen: dict[str, list[ModelRequest]] = {}


@pytest.fixture(autouse=True)
def counted() -> None:
    """Counts per run id, from zero in each test (the ids repeat across tests)."""
    model_calls.clear()
    tool_calls.clear()
    seen.clear()


def run_of() -> str:
    """The run the current step belongs to."""
    step = current_step()
    assert step is not None
    return step.id.rsplit("/", 1)[0]


def planner(request: ModelRequest) -> ModelResponse:
    run = run_of()
    with lock:
        model_calls[run] += 1
        seen.setdefault(run, []).append(request)
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    if turn <= 3:
        return reply("", call("note", text=f"a{turn}"), call("note", text=f"b{turn}"))
    notes = [r.content for m in request.messages if m.role == "tool" for r in m.tool_results]
    return reply(f"{request.system} | {' '.join(notes)}")


@tool
def note(text: str) -> str:
    """Note something down."""
    with lock:
        tool_calls[run_of()] += 1
    return text.upper()


forker = Agent("forker", "Plan.", model=FunctionModel(planner, name="planner"), tools=[note])
MODEL_STEPS = {1, 4, 7, 10}
TOOL_STEPS = {2, 3, 5, 6, 8, 9}


def steps_under(dsn: str, run_id: str) -> int:
    [(n,)] = sql(dsn, "SELECT count(*) FROM promises WHERE starts_with(id, %s)", run_id + "/")
    return int(n)


@pytest.fixture
def source(rt: Runtime, dsn: str) -> tuple[str, Any]:
    handle = rt.start(forker, "go", id="forks/source")
    output = handle.result(timeout=30)
    assert output == "Plan. | A1 B1 A2 B2 A3 B3"
    assert steps_under(dsn, "forks/source") == 10
    return "forks/source", sql(dsn, "SELECT id, state, value FROM promises ORDER BY id")


@pytest.mark.parametrize("at", range(1, 11))
def test_a_fork_at_each_step_reuses_the_steps_before_it_and_runs_the_rest(
    rt: Runtime, dsn: str, source: tuple[str, Any], at: int
) -> None:
    source_id, before = source
    handle = rt.fork(source_id, at_step=at, prompt="Plan again.")
    assert handle.id == "forks/source~fork1"
    assert handle.result(timeout=30) == "Plan again. | A1 B1 A2 B2 A3 B3"
    assert model_calls[handle.id] == len([p for p in MODEL_STEPS if p >= at])
    assert tool_calls[handle.id] == len([p for p in TOOL_STEPS if p >= at])
    # Only what ran anew is kept under the fork: the prefix is read from the source.
    assert steps_under(dsn, handle.id) == 10 - (at - 1)
    # The source is untouched, and the fork says where it came from.
    source_rows = [r for r in before if r[0].startswith(source_id) and "~" not in r[0]]
    after = sql(
        dsn, "SELECT id, state, value FROM promises WHERE strpos(id, '~fork') = 0 ORDER BY id"
    )
    assert [r for r in after if r[0].startswith(source_id)] == source_rows
    [(fork,)] = sql(dsn, "SELECT param->'fork' FROM promises WHERE id = %s", handle.id)
    assert fork == {"source": source_id, "at": at, "prompt": "Plan again."}


def test_the_fresh_model_calls_see_the_kept_transcript_and_the_new_prompt(
    rt: Runtime, source: tuple[str, Any]
) -> None:
    handle = rt.fork("forks/source", at_step="forks/source/7", prompt="Plan anew.", id="forks/b")
    handle.result(timeout=30)
    first = seen["forks/b"][0]
    assert first.system == "Plan anew."
    assert [m.role for m in first.messages] == ["user", "assistant", "tool", "assistant", "tool"]


def test_a_fork_with_another_model_and_no_tools_runs_on_them(
    rt: Runtime, source: tuple[str, Any]
) -> None:
    asked: list[ModelRequest] = []

    def other(request: ModelRequest) -> str:
        asked.append(request)
        return "other answer"

    model = FunctionModel(other, name="other-model")
    handle = rt.fork("forks/source", at_step=10, model=model, tools=[])
    assert handle.result(timeout=30) == "other answer"
    assert len(asked) == 1 and asked[0].tools == []
    assert model_calls[handle.id] == 0
    assert rt.store is not None
    assert rt.store.get(handle.id).param_as(dict)["model"] == "other-model"


def test_forks_of_one_run_get_the_next_free_ids_and_a_given_id_is_joined(
    rt: Runtime, source: tuple[str, Any]
) -> None:
    first = rt.fork("forks/source", at_step=10)
    second = rt.fork("forks/source", at_step=10)
    assert (first.id, second.id) == ("forks/source~fork1", "forks/source~fork2")
    again = rt.fork("forks/source", at_step=10, id="forks/source~fork1")
    assert again.reused and again.result(timeout=30) == first.result(timeout=30)


@pytest.mark.parametrize(
    ("at", "says"),
    [
        (0, "1 to 10"),
        (11, "1 to 10"),
        ("x", "'x'"),
        ("forks/other/2", "forks/other/2"),
        (True, "True"),
    ],
)
def test_a_fork_at_no_kept_step_is_refused_and_starts_nothing(
    rt: Runtime, dsn: str, source: tuple[str, Any], at: Any, says: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"at_step must name a kept step.*{says}"):
        rt.fork("forks/source", at_step=at)
    assert sql(dsn, "SELECT count(*) FROM promises WHERE strpos(id, '~fork') > 0") == [(0,)]


def test_forking_what_is_not_there_or_not_an_agent_run_says_so(rt: Runtime) -> None:
    with pytest.raises(PromiseNotFoundError, match="'forks/nothing'"):
        rt.fork("forks/nothing", at_step=1)
    assert rt.store is not None
    rt.store.create("forks/plain")
    with pytest.raises(InvalidInputError, match="cannot be forked"):
        rt.fork("forks/plain", at_step=1)


# -- supervision trees: sub-agent calls after the cut run anew, as children of the fork -----


def helper_model(request: ModelRequest) -> str:
    with lock:
        model_calls[run_of()] += 1
    return f"helped with {request.messages[0].text}"


def boss_model(request: ModelRequest) -> ModelResponse:
    with lock:
        model_calls[run_of()] += 1
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    if turn <= 2:
        return reply("", call("fork-helper", input=f"part {turn}"))
    results = [r.content for m in request.messages if m.role == "tool" for r in m.tool_results]
    return reply(f"{request.system} {results}")


helper = Agent("fork-helper", "Help.", model=FunctionModel(helper_model, name="helper"))
boss = Agent("fork-boss", "Lead.", model=FunctionModel(boss_model, name="boss"), tools=[helper])


def test_a_forked_parent_reuses_sub_agent_calls_before_the_cut_and_runs_later_ones_anew(
    rt: Runtime, dsn: str
) -> None:
    source = rt.start(boss, "go", id="forks/tree")
    assert source.result(timeout=30) == "Lead. ['helped with part 1', 'helped with part 2']"
    # Parent steps: 1 model, 2 spawn, 3 call, 4 model, 5 spawn, 6 call, 7 model.
    fork = rt.fork("forks/tree", at_step=4, prompt="Lead again.")
    assert fork.result(timeout=30) == "Lead again. ['helped with part 1', 'helped with part 2']"
    assert model_calls[fork.id] == 2
    # A sub-agent's run is the message of its call step: the source's were forks/tree/3 and
    # forks/tree/6; the fork reused the first and made its own second, at its step 3.
    children = [k for k in model_calls if k.startswith(fork.id + "/")]
    assert children == [f"{fork.id}/3"]
    assert model_calls[children[0]] == 1
    assert model_calls["forks/tree/3"] == 1  # run once, for the source only
