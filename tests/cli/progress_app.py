"""What ``promissory run tests.cli.progress_app:setup`` hosts: two agent runs that wait.

``progress/approval`` waits on a person's promise, ``approvals/progress``; ``progress/nap``
sleeps durably for an hour (a timer row). Their progress lines say so.
"""

from __future__ import annotations

from promissory import Context, Runtime
from promissory.agents import Agent, ScriptedModel, call, reply, tool

APPROVAL_RUN = "progress/approval"
APPROVAL = "approvals/progress"
NAP_RUN = "progress/nap"


@tool
def ask(ctx: Context) -> str:
    """Ask a person."""
    return "yes" if ctx.promise(id=APPROVAL).result(bool) else "no"


@tool
def nap(ctx: Context) -> str:
    """Sleep an hour."""
    ctx.sleep(3600)
    return "rested"


asker = Agent(
    "progress-asker", "Ask.", ScriptedModel([reply("", call("ask", "a1")), "asked"]), tools=[ask]
)
sleeper = Agent(
    "progress-sleeper", "Nap.", ScriptedModel([reply("", call("nap", "n1")), "slept"]), tools=[nap]
)


def setup(rt: Runtime) -> None:
    rt.start(asker, "ask", id=APPROVAL_RUN)
    rt.start(sleeper, "nap", id=NAP_RUN)
