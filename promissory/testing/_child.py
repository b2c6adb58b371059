"""The child process of a crash test: run a scenario on a Runtime and print its outcome.

``python -m promissory.testing._child MODULE:FUNCTION`` runs ``FUNCTION(rt)`` with a
``Runtime`` on ``$PROMISSORY_DSN``; the function starts work (with fixed ids, so that running
it again resumes rather than repeats) and returns a JSON-able outcome, printed as a line of
stdout after ``OUTCOME ``; a ``BEGAN`` line says when the scenario began.
``$PROMISSORY_CRASH_AT`` arms a crash point (see ``promissory._crashpoints``). With
``$PROMISSORY_CHECK_REPLAY`` set, every finished message is then replayed from its journal
alone (``REPLAY`` line: the problems found). A ``TOOLS`` line gives the effect class of every
tool of the agents defined; a ``POINTS`` line, how often each crash point was reached and how
many batches of each kind were committed (with ``$PROMISSORY_COUNT_POINTS`` set).
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import msgspec

from .._crashpoints import counted
from ..runtime import Runtime
from ._harness import BEGAN, MARK


def main(argv: list[str]) -> int:
    """Run the scenario named by ``argv[0]`` and print its outcome."""
    module_name, _, attr = argv[0].partition(":")
    sys.path.insert(0, os.getcwd())
    scenario = getattr(importlib.import_module(module_name), attr)
    with Runtime(os.environ.get("PROMISSORY_DSN")) as rt:
        print(f"RECOVERY {msgspec.json.encode(rt.recovery).decode()}", flush=True)
        print(f"{BEGAN}{time.monotonic()}", flush=True)
        outcome = scenario(rt)
        print(f"TOOLS {msgspec.json.encode(tool_effects()).decode()}", flush=True)
        print(f"POINTS {msgspec.json.encode(counted()).decode()}", flush=True)
        print(MARK + msgspec.json.encode(outcome).decode(), flush=True)
        if os.environ.get("PROMISSORY_CHECK_REPLAY"):
            from ._replay import check_replays

            print(f"REPLAY {msgspec.json.encode(check_replays(rt)).decode()}", flush=True)
    return 0


def tool_effects() -> dict[str, str]:
    """``tool:<name>`` -> effect class, for the tools of every agent defined in this process."""
    from ..agents import Tool, defined_agents

    effects = {
        f"tool:{tool.name}": tool.effect.value
        for agent in defined_agents()
        for tool in agent.tools.values()
        if isinstance(tool, Tool)
    }
    for agent in defined_agents():  # MCP servers' tools, by the classes declared for them
        for server in agent.toolsets:
            effects.update({f"tool:{name}": e.value for name, e in server.effects.items()})
    return effects


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
