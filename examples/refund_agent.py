"""An agent to crash-test: it looks up an order, asks for approval, and refunds it.

``test_refund_agent.py`` next to it proves it survives crashes with promissory's pytest
plugin: ``crash_test(scenario)`` runs the scenario below cleanly, then kills it with SIGKILL
at every step boundary and at random moments, and checks that the outcome never changes, that
no kept step runs again, and that the refund tool (declared ``idempotent``) keys its effect by
its idempotency key.
"""

from __future__ import annotations

from typing import Any

from promissory import Context, Runtime, current_step
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply, tool
from promissory.testing import effect

RUN_ID = "refunds/order-17"


@tool(effect="safe")
def lookup_order(order: int) -> dict[str, Any]:
    """Read an order.

    Args:
        order: the order number.
    """
    return {"order": order, "amount": 42, "paid": True}


@tool(effect="idempotent")
def refund(order: int, amount: int) -> str:
    """Refund an order, once, whatever crashes in between.

    Args:
        order: the order number.
        amount: how much to refund.
    """
    step = current_step()
    key = step.idempotency_key if step is not None else f"refund-{order}"
    # A real payment API takes the key and refuses to pay twice for it; here, record it.
    effect("refund", key)
    return f"refunded {amount} for order {order}"


@tool
def approve(ctx: Context, order: int) -> bool:
    """Ask a person to approve (auto-approved here after a durable wait)."""
    ctx.sleep(0.05)
    return True


clerk = Agent(
    "refund-clerk",
    "Refund the order if it was paid, after approval.",
    ScriptedModel(
        [
            reply("", call("lookup_order", "c1", order=17)),
            reply("", call("approve", "c2", order=17)),
            reply("", call("refund", "c3", order=17, amount=42)),
            "Refunded 42 for order 17.",
        ]
    ),
    tools=[lookup_order, approve, refund],
)


def scenario(rt: Runtime) -> Any:
    """Start (or resume) the refund and return its answer."""
    assert rt.store is not None
    if rt.store.find(RUN_ID) is None:
        handle = rt.start(clerk, "Please refund order 17", id=RUN_ID)
    else:
        handle = RunHandle(RUN_ID, rt.store)
    return handle.result(timeout=60)


if __name__ == "__main__":
    with Runtime() as runtime:
        print(scenario(runtime))
