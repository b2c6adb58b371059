"""Runs to forget, shared by the forget and retention tests: agents with a sub-agent and a
promise owned outside the run's id, and SQL that reads everything of a run."""

from __future__ import annotations

import threading
from typing import Any

from promissory import Context
from promissory.actors import Canceled
from promissory.agents import Agent, ScriptedModel, call, reply, tool
from promissory.runtime import Runtime
from tests.actors.kit import eventually, sql

TIDIED: list[str] = []
"""Runs whose approval wait was canceled and which cleaned up (a kept step) before ending."""

GATES: dict[str, threading.Event] = {}
"""Gates the ``stuck`` tool blocks on until they are set."""

STUCK_IN = threading.Event()
"""Set once the ``stuck`` tool runs."""


def _tidy(run_id: str) -> str:
    TIDIED.append(run_id)
    return "tidied"


def approval_of(run_id: str) -> str:
    """The id of the approval a run of ``TEAM`` waits on (not under the run's id)."""
    return f"approvals/forget/{run_id}"


@tool
def ask_person(ctx: Context, question: str) -> str:
    """Wait for a person's answer, on a promise outside the run's id; tidy up if canceled.

    Args:
        question: what to ask.
    """
    try:
        return str(ctx.promise(id=approval_of(ctx.message_id)).result())
    except Canceled:
        ctx.step(_tidy, ctx.message_id, name="tidy")
        raise


@tool
def leave_a_question(ctx: Context, question: str) -> str:
    """Create a promise for a person to answer some day, and go on without waiting.

    Args:
        question: what to ask.
    """
    ctx.promise(id=approval_of(ctx.message_id))
    return "asked"


@tool
def stuck(gate: str) -> str:
    """Block (in a thread, deaf to cancels) until the test lets go.

    Args:
        gate: which gate to wait on.
    """
    STUCK_IN.set()
    GATES[gate].wait(30)
    return "unstuck"


RESEARCHER = Agent("forget_researcher", "Find a fact.", ScriptedModel(["a fact"]))
TEAM = Agent(
    "forget_team",
    "Ask the researcher and a person.",
    ScriptedModel(
        [
            reply(
                "",
                call("forget_researcher", "c1", input="go"),
                call("ask_person", "c2", question="?"),
            ),
            "done",
        ]
    ),
    tools=[RESEARCHER, ask_person],
)
"""A run: a sub-agent (a child actor under the run's id) and an approval it owns elsewhere."""

SOLO = Agent("forget_solo", "Answer.", ScriptedModel(["ok"]))
"""A run of one model call."""

LEAVER = Agent(
    "forget_leaver",
    "Ask and go on.",
    ScriptedModel([reply("", call("leave_a_question", "c1", question="?")), "left"]),
    tools=[leave_a_question],
)
"""A run that finishes owning a promise still pending."""

STUCK = Agent(
    "forget_stuck",
    "Call the stuck tool.",
    ScriptedModel([reply("", call("stuck", "c1", gate="gate")), "done"]),
    tools=[stuck],
)


def finished_team_run(rt: Runtime, run_id: str) -> None:
    """A ``TEAM`` run to its end (its approval granted)."""
    handle = rt.start(TEAM, "go", id=run_id)
    approve(rt, run_id)
    assert handle.result(timeout=15) == "done"


def approve(rt: Runtime, run_id: str) -> None:
    """Grant the approval ``run_id`` waits on, once it waits."""
    assert rt.store is not None
    store = rt.store
    eventually(lambda: store.find(approval_of(run_id)), what=f"{run_id}'s approval")
    store.resolve(approval_of(run_id), True)


def everything_of(dsn: str, run_id: str) -> list[tuple[Any, ...]]:
    """Every row of a run: its promises (under it, owned by it or under it) and actors."""
    like = run_id.replace("_", r"\_").replace("%", r"\%") + "/%"
    promises = sql(
        dsn,
        "SELECT 'promise', id, state FROM promises "
        "WHERE id = %s OR id LIKE %s OR owner = %s OR owner LIKE %s ORDER BY seq",
        run_id,
        like,
        run_id,
        like,
    )
    actors = sql(
        dsn,
        "SELECT 'actor', id, status FROM actors WHERE id = %s OR id LIKE %s ORDER BY seq",
        run_id,
        like,
    )
    return promises + actors


def ended(dsn: str, *run_ids: str) -> None:
    """Wait until the actors of finished runs have ended (an actor's end is kept a moment after
    its run's reply; retention leaves a run whose actor is still at work to a later pass)."""
    for run_id in run_ids:
        like = run_id.replace("_", r"\_").replace("%", r"\%") + "/%"
        eventually(
            lambda run_id=run_id, like=like: (
                not sql(
                    dsn,
                    "SELECT id FROM actors WHERE (id = %s OR id LIKE %s) "
                    "AND status IN ('running', 'restarting')",
                    run_id,
                    like,
                )
            ),
            what=f"the actors of {run_id} ended",
        )


def backdate(dsn: str, *ids: str, days: int = 2) -> None:
    """Make runs look finished ``days`` ago (a test's stand-in for waiting that long)."""
    for id in ids:
        sql(
            dsn,
            "UPDATE promises SET settled_at = settled_at - %s * interval '1 day' WHERE id = %s "
            "RETURNING id",
            days,
            id,
        )
