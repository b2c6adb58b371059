"""A research team that survives crashes: the demo's agents, run from your own code.

The team is defined in ``promissory/demo.py`` (read it as a template): a lead agent fans out
to three researcher sub-agents, each attached with its own restart policy, and writes up what
they found. Run this file twice with ``--crash-after 4`` the first time: the second run picks
the same run up where the first one died.

    python examples/research_team.py --crash-after 4
    python examples/research_team.py
"""

from __future__ import annotations

import argparse

from promissory import Runtime, _crashpoints
from promissory.agents import RunHandle
from promissory.demo import build_team

RUN_ID = "examples/research-team"


def main(crash_after: int | None = None, model: str | None = None) -> str:
    lead = build_team(model)
    with Runtime() as rt:
        assert rt.store is not None
        if crash_after is not None:
            _crashpoints.arm(f"step.kept:{crash_after}")
        existing = rt.store.find(RUN_ID)
        if existing is None:
            handle = rt.start(
                lead, "Compare durable execution engines and actor systems", id=RUN_ID
            )
        else:
            # Started before (and perhaps killed): the runtime's recovery pass has resumed
            # it already; wait for its result like any other process could.
            handle = RunHandle(RUN_ID, rt.store)
        answer: str = handle.result(timeout=120)
    print(answer)
    return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--model", default=None, help="e.g. openai:gpt-4o-mini")
    args = parser.parse_args()
    main(args.crash_after, args.model)
