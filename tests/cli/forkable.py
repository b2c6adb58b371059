"""An agent for ``promissory fork ID --at STEP --module tests.cli.forkable``: two turns that
look something up, then an answer that says which prompt it was given.
"""

from __future__ import annotations

from promissory.agents import Agent, FunctionModel, ModelRequest, ModelResponse, call, reply, tool


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return f"{key}=1"


def answer(request: ModelRequest) -> ModelResponse:
    turn = sum(1 for m in request.messages if m.role == "assistant") + 1
    if turn <= 2:
        return reply("", call("lookup", key=f"k{turn}"))
    found = [r.content for m in request.messages for r in m.tool_results]
    return reply(f"{request.system} {' '.join(found)}")


agent = Agent("cli-forkable", "Answer.", model=FunctionModel(answer, name="answer"), tools=[lookup])
