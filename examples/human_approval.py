"""Human approval: a tool waits for a person, for days if need be, holding no thread.

The ``transfer`` tool creates a durable promise ``approvals/<run>/<amount>`` and waits on it.
Approve it from another terminal (the runtime may even be restarted in between; nothing
changes):

    python examples/human_approval.py            # starts the run, waits for the approval
    promissory resolve approvals/examples-approval/250 --value true

With ``--approve`` the script settles the approval itself after a second, from a second
process, to show the whole round trip.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

from promissory import Context, Runtime
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply, tool

RUN_ID = "examples-approval"


@tool
def transfer(ctx: Context, amount: int) -> str:
    """Move money, once a person has approved it.

    Args:
        amount: how much to move.
    """
    # One approval per run (ctx.message_id is the run's id): a resumed run asks again rather
    # than reuse an answer given to the run it continues. The run owns it: a cancel reaches it.
    approval = ctx.promise(id=f"approvals/{ctx.message_id}/{amount}", timeout=7 * 24 * 3600)
    if not approval.result(bool):
        return f"transfer of {amount} was declined"
    return ctx.step(send_money, amount)


def send_money(amount: int) -> str:
    # A real payment API would take current_step().idempotency_key, so a retry after a
    # crash cannot pay twice.
    return f"sent {amount}"


clerk = Agent(
    "clerk",
    "Move the money the user asks for, with the transfer tool.",
    ScriptedModel([reply("", call("transfer", "t1", amount=250)), "Done: the transfer went out."]),
    tools=[transfer],
)


def approve_from_another_process(dsn: str) -> None:
    command = ["promissory", "--dsn", dsn, "resolve", f"approvals/{RUN_ID}/250"]
    subprocess.run([sys.executable, "-m", *command, "--value", "true"], check=True)


def main(approve: bool = False) -> str:
    with Runtime() as rt:
        assert rt.store is not None
        if rt.store.find(RUN_ID) is None:
            handle = rt.start(clerk, "Pay the invoice of 250", id=RUN_ID)
        else:
            handle = RunHandle(RUN_ID, rt.store)  # started earlier: the runtime resumed it
        print(f"waiting for approval: promissory resolve approvals/{RUN_ID}/250 --value true")
        if approve:
            threading.Timer(1.0, approve_from_another_process, args=(rt.store.dsn,)).start()
        answer: str = handle.result(timeout=600)
    print(answer)
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approve", action="store_true", help="approve it after a second")
    main(parser.parse_args().approve)
