"""The demo: a research team that survives crashes. Read it as a template for your own.

A lead agent plans, fans out to three researcher sub-agents, gathers what they found, and
writes an answer. Each researcher is attached with its own supervision policy:

* ``scout`` is reliable.
* ``flaky``'s first model call fails (a bad answer that cannot be retried as such), which
  crashes it; its policy (transient, two restarts) restarts it, and the restarted incarnation
  tries the failed step again and gets through.
* ``broken``'s model always fails; after its two restarts it is given up, and its failure
  comes back to the lead as an error result, which the lead works around.

With no model given, every agent uses ``OfflineModel``, a small deterministic stand-in for a
language model, so the demo runs anywhere and always gives the same answer. Pass a model (an
object or a string such as ``"openai:gpt-4o-mini"``) to ``build_team`` to run it on a real one.

Run it with ``promissory demo`` (add ``--crash-after 5``, then run ``promissory demo`` again to
see it resume), or from Python::

    from promissory import Runtime
    from promissory.demo import build_team

    lead = build_team()
    with Runtime() as rt:
        print(rt.run(lead, "Compare durable execution engines", id="demo/1"))
"""

from __future__ import annotations

from typing import Any

from .actors import current_step
from .agents import (
    Agent,
    Model,
    ModelRequest,
    ModelResponse,
    ToolResult,
    call,
    model_from,
    reply,
    tool,
)
from .errors import ModelError

__all__ = ["OfflineModel", "build_team", "search"]

TOPICS = {
    "scout": "how durable execution engines record progress",
    "flaky": "how actor systems supervise failures",
    "broken": "benchmarks of agent frameworks",
}

FACTS = {
    "how durable execution engines record progress": [
        "Temporal keeps an event history and replays workflow code against it.",
        "DBOS checkpoints each step's output in Postgres, one row per step.",
    ],
    "how actor systems supervise failures": [
        "Erlang/OTP supervisors restart children by strategy within an intensity window.",
        "Akka adds exponential backoff between restarts.",
    ],
    "benchmarks of agent frameworks": ["(no data)"],
}


@tool(effect="safe")
def search(topic: str) -> list[str]:
    """Look up what is known about a topic.

    Args:
        topic: what to search for.

    """
    return FACTS.get(topic, ["nothing found"])


class OfflineModel:
    """A deterministic stand-in for a language model, playing one role of the team."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.name = f"offline:{role}"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer as the role would: plan and delegate, or search and summarise."""
        turn = sum(1 for m in request.messages if m.role == "assistant")
        results = [r for m in request.messages for r in m.tool_results]
        if self.role == "lead":
            return self._lead(turn, request, results)
        return self._researcher(turn, request, results)

    def _lead(self, turn: int, request: ModelRequest, results: list[ToolResult]) -> ModelResponse:
        if turn == 0:
            return reply(
                "Plan: ask three researchers, then write up what they find.",
                *(
                    call(name, f"ask-{name}", input=f"Research {topic}.")
                    for name, topic in TOPICS.items()
                ),
            )
        found = [r for r in results if not r.is_error]
        missing = [r.name for r in results if r.is_error]
        lines = [f"- {r.name}: {r.content}" for r in found]
        note = (
            f"\n(Not covered: {', '.join(missing)} failed and was given up; "
            "the answer stands on the rest.)"
            if missing
            else ""
        )
        return reply("Findings:\n" + "\n".join(lines) + note)

    def _researcher(
        self, turn: int, request: ModelRequest, results: list[ToolResult]
    ) -> ModelResponse:
        if turn == 0:
            return reply("", call("search", f"search-{self.role}", topic=TOPICS[self.role]))
        facts: Any = results[-1].content if results else "nothing"
        return reply(f"{facts}")


class StagedTrouble:
    """A role's model with the demo's staged trouble in front of it, whatever the model: the
    ``broken`` researcher's model always fails, and the ``flaky`` one's first incarnation
    fails its first turn (its restart gets through); the others pass straight through.
    """

    def __init__(self, inner: Model, role: str, name: str | None = None) -> None:
        self.inner = inner
        self.role = role
        self.name = name or inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Fail as the role is staged to, else ask the model."""
        turn = sum(1 for m in request.messages if m.role == "assistant")
        step = current_step()
        attempt = step.id if step is not None else ""
        if self.role == "broken":
            raise ModelError("broken: the model is unavailable", "bad_request", retryable=False)
        if self.role == "flaky" and turn == 0 and "~" not in attempt:
            # Only the first incarnation fails: a restart retries this step under an attempt
            # id (``…~1``) and gets through. Deterministic, so a resumed demo agrees.
            raise ModelError("flaky: the answer came back truncated", "malformed_output", False)
        return await self.inner.complete(request)


def build_team(model: Model | str | None = None) -> Agent:
    """The lead agent with its three researchers attached; ``model`` for all, or offline.
    Either way the flaky researcher fails once and the broken one always (``StagedTrouble``).
    A model given as a string is named by it (``"ollama:llama3.2"``), so a run keeps the very
    string it was started with (``RunTask.model``) and ``promissory demo`` can ask for it back.
    """

    def pick(role: str) -> Model:
        inner = model_from(model) if model is not None else OfflineModel(role)
        return StagedTrouble(inner, role, name=model if isinstance(model, str) else None)

    researchers = {
        role: Agent(
            role,
            "You are a researcher. Use the search tool once, then summarise what it found "
            "in one or two sentences.",
            pick(role),
            tools=[search],
        )
        for role in TOPICS
    }
    return Agent(
        "lead",
        "You lead a research team. Ask each researcher (scout, flaky, broken) one question "
        "in parallel, then write a short answer from what they found; say what is missing.",
        pick("lead"),
        tools=[
            researchers["scout"].as_tool(),
            researchers["flaky"].as_tool(restart="transient", intensity=2, period=60),
            researchers["broken"].as_tool(restart="transient", intensity=2, period=60),
        ],
    )
