"""A node for the browser tests: a clerk agent whose transfer waits for a person's approval.

``promissory run tests.ui.approval_app:setup`` starts the run ``payments/1`` (if it is not
there yet) and hosts it; the run waits on ``approvals/250`` until someone settles it.
"""

from __future__ import annotations

from promissory import Context, Runtime
from promissory.agents import Agent, ScriptedModel, call, reply, tool

RUN = "payments/1"
APPROVAL = "approvals/250"


@tool
def transfer(ctx: Context, amount: int) -> str:
    """Move money once a person approves.

    Args:
        amount: how much.
    """
    if not ctx.promise(id=f"approvals/{amount}", param={"amount": amount}).result(bool):
        return "declined"
    return ctx.step(lambda: f"sent {amount}", name="bank.transfer")


clerk = Agent(
    "ui-clerk",
    "Pay what you are asked to, once approved.",
    ScriptedModel([reply("Paying.", call("transfer", "t1", amount=250)), "Paid 250."]),
    tools=[transfer],
)


def setup(rt: Runtime) -> None:
    rt.start(clerk, "Pay 250 to Ann", id=RUN)
