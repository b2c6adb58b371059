"""Scenarios for the crash suite's own tests: one sound, four with a defect each."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from promissory import Context, DurableActor, Runtime, current_step, handler
from promissory.agents import Agent, FunctionModel, RunHandle, ScriptedModel, call, reply, tool
from promissory.testing import effect


def _run(rt: Runtime, agent: Agent, run_id: str) -> Any:
    assert rt.store is not None
    if rt.store.find(run_id) is None:
        return rt.start(agent, "go", id=run_id).result(timeout=60)
    return RunHandle(run_id, rt.store).result(timeout=60)


@tool(effect="idempotent")
def charge(amount: int) -> str:
    """Charge once per idempotency key."""
    step = current_step()
    assert step is not None
    effect("charge", step.idempotency_key)
    return f"charged {amount}"


@tool(effect="idempotent")
def sloppy_charge(amount: int) -> str:
    """Charge, keyed by something that is not the idempotency key."""
    effect("charge", f"amount-{amount}")
    return f"charged {amount}"


@tool(effect="at_most_once")
def launch(target: str) -> str:
    """Must never happen twice."""
    time.sleep(0.2)  # a crash in the middle is likely
    return f"launched at {target}"


def _agent(name: str, tools: list[Any], script: list[Any]) -> Agent:
    return Agent(name, "x", ScriptedModel(script), tools=tools)


sound_agent = _agent(
    "sound",
    [charge],
    [reply("", call("charge", "a", amount=5)), reply("", call("charge", "b", amount=7)), "done"],
)
sloppy_agent = _agent(
    "sloppy", [sloppy_charge], [reply("", call("sloppy_charge", "a", amount=5)), "done"]
)
launching_agent = _agent(
    "launcher", [launch], [reply("", call("launch", "a", target="mars")), "ok"]
)


unfixed_agent = _agent("unfixed", [charge], [reply("", call("charge", "a", amount=5)), "done"])


def unfixed(rt: Runtime) -> Any:
    """A defect: a new run id on every start, so a restart starts over instead of resuming."""
    return _run(rt, unfixed_agent, f"runs/unfixed-{uuid.uuid4().hex[:6]}")


def _decide(request: Any) -> Any:
    """A function model: charge once, then say what the tool answered."""
    results = [r for m in request.messages for r in m.tool_results]
    if not results:
        return reply("", call("charge", "a", amount=3))
    return f"done: {results[-1].content}"


function_agent = Agent("functional", "x", FunctionModel(_decide), tools=[charge])


def functional(rt: Runtime) -> Any:
    """The sound agent's work decided by a function rather than a script."""
    return _run(rt, function_agent, "runs/functional")


def sound(rt: Runtime) -> Any:
    return _run(rt, sound_agent, "runs/sound")


def sloppy(rt: Runtime) -> Any:
    return _run(rt, sloppy_agent, "runs/sloppy")


def launching(rt: Runtime) -> Any:
    return _run(rt, launching_agent, "runs/launch")


_throws = itertools.count()


class Dice(DurableActor):
    @handler
    def roll(self, ctx: Context, sides: int) -> int:
        # Control flow on something outside any step (here: how often this process rolled;
        # in real code the clock, a random number, a dict's order): the replay from the
        # journal takes the other branch and asks for a step the journal does not hold.
        if next(_throws) % 2 == 0:
            return ctx.step(lambda: 1, name="low")
        return ctx.step(lambda: sides, name="high")


def dice(rt: Runtime) -> Any:
    ref = rt.spawn(Dice, id="dice")
    return ref.ask(6, id="dice/roll").get(timeout=30)
