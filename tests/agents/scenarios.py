"""Agents and scenarios the agent crash tests run in child processes (each resumes when run
again).

``research``: a lead agent takes three turns; its tools are a sync tool (``lookup``), an async
tool (``tally``) and two sub-agents (``researcher``, ``critic``) that have tools of their own;
each turn's calls run concurrently. Every model call and tool call records an effect keyed by
its step id (``promissory.testing.effect``), so a test counts how often each ran across kills.
The models answer from scripts, through ``Counted``, a wrapper that records the call and has
no tools of its own.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import msgspec

from promissory.actors import current_step
from promissory.agents import (
    Agent,
    ModelRequest,
    RunHandle,
    Usage,
    call,
    reply,
)
from promissory.runtime import Runtime
from promissory.testing import effect
from tests.kit import RecordingModel

RUN = "agent/run/crash"
TASK = "Write a short note on durable agents."


def step_id() -> str:
    step = current_step()
    assert step is not None, "effects are recorded inside steps only"
    return step.id


def _count(agent: str, turn: int, step: str, request: ModelRequest) -> None:
    # The effect's key is ``{agent}:{turn}|{step id}``: which answer was asked for, and the
    # step (the idempotency key) it was asked in.
    effect("model", f"{agent}:{turn}|{step}")


def counted(agent: str, script: list[Any]) -> RecordingModel:
    """A model that records each call as an effect ``model``, then answers from a script."""
    return RecordingModel(agent, script, _count, name=f"counted:{agent}")


def lookup(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: what to look up.
    """
    effect("lookup", step_id())
    return f"notes on {topic}"


async def tally(numbers: list[int]) -> int:
    """Add numbers up.

    Args:
        numbers: the numbers.
    """
    await asyncio.sleep(0.005)
    effect("tally", step_id())
    return sum(numbers)


def usage(n: int) -> Usage:
    return Usage(requests=1, input_tokens=100 * n, output_tokens=10 * n, cache_read_tokens=n)


RESEARCHER = Agent(
    "crash_researcher",
    "Find facts.",
    counted(
        "researcher",
        [
            reply("", call("lookup", "r1", topic="durable actors"), usage=usage(1)),
            reply("Durable actors keep every step as a promise.", usage=usage(2)),
        ],
    ),
    tools=[lookup],
)

CRITIC = Agent(
    "crash_critic",
    "Check the numbers.",
    counted(
        "critic",
        [
            reply("", call("tally", "k1", numbers=[1, 2, 3]), usage=usage(3)),
            reply("The numbers add up to 6.", usage=usage(4)),
        ],
    ),
    tools=[tally],
)

LEAD = Agent(
    "crash_lead",
    "Plan, delegate, write.",
    counted(
        "lead",
        [
            reply(
                "Looking things up.",
                call("lookup", "l1", topic="postgres"),
                call("researcher", "l2", input="What are durable actors?"),
                usage=usage(5),
            ),
            reply(
                "",
                call("critic", "l3", input="Check 1 + 2 + 3."),
                call("tally", "l4", numbers=[4, 5]),
                call("lookup", "l5", topic="pykka"),
                usage=usage(6),
            ),
            reply("Durable agents keep promises; the numbers add up.", usage=usage(7)),
        ],
    ),
    tools=[
        lookup,
        tally,
        RESEARCHER.as_tool(name="researcher"),
        CRITIC.as_tool(name="critic"),
    ],
)


def _order(id: str) -> tuple[tuple[int, Any], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[/~]", id))


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, bytes | str) else value


def research(rt: Runtime) -> dict[str, Any]:
    """Run (or resume, or look up) the lead's run; return its result and its transcript."""
    store = rt.store
    assert store is not None
    if store.get_many([RUN]):
        # Started before a crash: recovery resumes it; wait for it here.
        handle = RunHandle(RUN, store)
    else:
        handle = rt.start(LEAD, TASK, id=RUN)
    details = handle.details(timeout=60)
    rows = store.read(
        lambda conn: conn.execute(
            "SELECT id, kind, state, fingerprint, recipient, param, value FROM promises "
            "WHERE id = %s OR id LIKE %s",
            (RUN, RUN + "/%"),
        ).fetchall()
    )
    transcript = [
        {
            "id": id,
            "kind": kind,
            "state": state,
            "fingerprint": fingerprint,
            "recipient": recipient,
            "param": _json(param),
            "value": _json(value),
        }
        for id, kind, state, fingerprint, recipient, param, value in sorted(
            rows, key=lambda r: _order(r[0])
        )
    ]
    # The lead's conversation as the model saw it grow: its answers, in order.
    answers = [
        step["value"]["message"]
        for step in transcript
        if step["fingerprint"] and step["fingerprint"].startswith("step:model:crash_lead:")
    ]
    # A finished run ends its actor (and its sub-agents') just after its reply is kept.
    deadline = time.monotonic() + 2
    while True:
        actors = store.read(
            lambda conn: conn.execute(
                "SELECT id, parent, kind, status FROM actors ORDER BY id"
            ).fetchall()
        )
        if all(a[3] != "running" for a in actors) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return {
        "output": details.output,
        "details": msgspec.to_builtins(details),
        "answers": answers,
        "transcript": transcript,
        "actors": [list(a[:3]) for a in actors],
        # Apart: a crash between a run's reply and the end of its actor leaves it running.
        "statuses": {a[0]: a[3] for a in actors},
    }
