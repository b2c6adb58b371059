"""An agent for ``promissory resume ID --module tests.cli.resumable``.

Turn one looks something up; turn two asks a person, on the durable promise
``approvals/{run id}``; turn three answers with what the person said. Cancel a run while it
waits for the person, and ``resume`` goes on from the end of turn one, as a new run that asks
again on its own approval promise.
"""

from __future__ import annotations

from promissory import Context
from promissory.agents import Agent, FunctionModel, ModelRequest, ModelResponse, call, reply, tool

AGENT = "cli-resumable"


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return f"{key} is 42"


@tool
def ask_person(ctx: Context, question: str) -> str:
    """Ask a person and wait for the answer.

    Args:
        question: what to ask.
    """
    answer = ctx.promise(id=f"approvals/{ctx.message_id}", param={"question": question})
    return f"the person said {answer.result()}"


def answer(request: ModelRequest) -> ModelResponse | str:
    results = [r for m in request.messages for r in m.tool_results]
    if not results:
        return reply("", call("lookup", "c1", key="x"))
    if len(results) == 1:
        return reply("", call("ask_person", "c2", question="may I?"))
    return f"done: {results[0].content}; {results[-1].content}"


agent = Agent(AGENT, "Look up, ask, answer.", FunctionModel(answer), tools=[lookup, ask_person])
