"""What the golden journals record: a plain actor that uses every durable operation, and an
agent with a tool and a sub-agent. ``record.py`` runs them and writes their journals as JSON;
``test_golden_journals.py`` replays those journals against the code as it is now.

Change nothing here that a handler asks of its context: a journal kept by an earlier version
must replay against the code of a later one (that is what the golden files check).
"""

from __future__ import annotations

import asyncio

import msgspec

from promissory.actors import Context, DurableActor, StepCall, handler
from promissory.agents import Agent, ScriptedModel, call, reply

CLERK = "journals/clerk"
HELPER = "journals/helper"
AGENT_RUN = "journals/agent/run"
TOOLS_RUN = "journals/agent/tools"


class Order(msgspec.Struct, frozen=True):
    item: str
    qty: int


class Price(msgspec.Struct, frozen=True):
    item: str


def total(qty: int, unit: int) -> int:
    return qty * unit


async def fetch_unit(item: str) -> int:
    await asyncio.sleep(0)
    return len(item)


def tax(amount: int) -> int:
    return amount // 10


class Helper(DurableActor[None]):
    """Answers a price; lives as the clerk's child."""

    @handler
    def price(self, ctx: Context, msg: Price) -> int:
        return ctx.step(fetch_unit, msg.item)


class Clerk(DurableActor[None]):
    """One message that asks for every kind of durable operation once."""

    @handler
    def order(self, ctx: Context, msg: Order) -> dict[str, object]:
        helper = ctx.spawn(Helper, id=HELPER)  # spawn
        unit = ctx.call(helper, Price(msg.item), returns=int)  # call
        amount = ctx.step(total, msg.qty, unit)  # a sync step
        looked_up = ctx.step(fetch_unit, msg.item)  # an async step
        both = ctx.step_many([StepCall(fn=tax, args=(n,)) for n in (amount, amount * 2)])
        ctx.sleep(0.01)  # a durable timer
        approval = ctx.promise().result()  # a promise settled from outside
        ctx.send(helper, Price("receipt"))  # a tell
        ctx.watch(helper)
        return {
            "amount": amount,
            "looked_up": looked_up,
            "taxes": [o.value for o in both],
            "approved": approval,
        }


def lookup(topic: str) -> str:
    """Look a topic up.

    Args:
        topic: what to look up.
    """
    return f"notes on {topic}"


SUMMARISER = Agent(
    "journals-summariser",
    "Summarise notes in a line.",
    ScriptedModel(["A line."], name="summariser"),
)

WRITER = Agent(
    "journals-writer",
    "Look things up, have them summarised, then answer.",
    ScriptedModel(
        [
            reply(
                "", call("lookup", "c1", topic="durability"), call("lookup", "c2", topic="replay")
            ),
            reply("", call("journals-summariser", "c3", input="notes on durability and replay")),
            "Durable and replayable.",
        ],
        name="writer",
    ),
    tools=[lookup, SUMMARISER.as_tool()],
)


LOOKER = Agent(
    "journals-looker",
    "Look things up, then answer.",
    ScriptedModel(
        [
            reply("", call("lookup", "l1", topic="journals"), call("lookup", "l2", topic="notes")),
            "Journals and fingerprints.",
        ],
        name="looker",
    ),
    tools=[lookup],
)
"""An agent with a tool only (no sub-agent: its run's type is not in its journal)."""
