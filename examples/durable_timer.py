"""A durable timer: an agent that checks something, then checks again tomorrow.

The ``check_again_later`` tool sleeps durably: a timer row, not a thread. Stop the process
while it waits and start it again later: the timer fires on the next start (at once if it came
due meanwhile), and the run goes on from there. Once it has finished, starting it again gives
its kept answer at once, and says so; ``promissory forget examples-timer`` lets it run anew.

    python examples/durable_timer.py                 # waits a day
    python examples/durable_timer.py --seconds 2     # waits two seconds
"""

from __future__ import annotations

import argparse

from promissory import Context, Runtime
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply, tool

RUN_ID = "examples-timer"

_prices = {"first": 101, "second": 97}


@tool
def check_price(moment: str) -> int:
    """Read the price now.

    Args:
        moment: which reading this is.
    """
    return _prices[moment]


@tool
def check_again_later(ctx: Context, seconds: float) -> str:
    """Wait durably, then say it is time to look again.

    Args:
        seconds: how long to wait.
    """
    ctx.sleep(seconds)
    return "it is later now"


def watcher(seconds: float) -> Agent:
    return Agent(
        "watcher",
        "Check the price, wait, check again, and say whether it fell.",
        ScriptedModel(
            [
                reply("", call("check_price", "c1", moment="first")),
                reply("", call("check_again_later", "w", seconds=seconds)),
                reply("", call("check_price", "c2", moment="second")),
                "The price fell from 101 to 97.",
            ]
        ),
        tools=[check_price, check_again_later],
    )


def main(seconds: float = 86400.0) -> str:
    agent = watcher(seconds)
    with Runtime() as rt:
        handle: RunHandle = rt.start(agent, "Watch the price", id=RUN_ID)
        if not handle.reused:
            print(f"waiting {seconds} s on a durable timer (stop me and start me again)...")
        elif not handle.done():
            print(f"{RUN_ID} is under way already: waiting on its durable timer, as it was...")
        else:
            # The run id is its idempotency key: the finished run is not run again.
            print(
                f"{RUN_ID} ran already; this is its kept answer, nothing ran again "
                f"(to run it anew: promissory forget {RUN_ID})"
            )
        answer: str = handle.result()
    print(answer)
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=86400.0)
    main(parser.parse_args().seconds)
