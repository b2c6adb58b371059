"""The child process of a crash test: run a scenario on a Runtime and print its outcome.

``python -m promissory.testing._child MODULE:FUNCTION`` runs ``FUNCTION(rt)`` with a
``Runtime`` on ``$PROMISSORY_DSN``; the function starts work (with fixed ids, so that running
it again resumes rather than repeats) and returns a JSON-able outcome, printed as the last line
of stdout after ``OUTCOME ``. ``$PROMISSORY_CRASH_AT`` arms a crash point (see
``promissory._crashpoints``).
"""

from __future__ import annotations

import importlib
import os
import sys

import msgspec

from ..runtime import Runtime
from ._harness import MARK


def main(argv: list[str]) -> int:
    """Run the scenario named by ``argv[0]`` and print its outcome."""
    module_name, _, attr = argv[0].partition(":")
    sys.path.insert(0, os.getcwd())
    scenario = getattr(importlib.import_module(module_name), attr)
    with Runtime(os.environ.get("PROMISSORY_DSN")) as rt:
        print(f"RECOVERY {msgspec.json.encode(rt.recovery).decode()}", flush=True)
        outcome = scenario(rt)
    print(MARK + msgspec.json.encode(outcome).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
