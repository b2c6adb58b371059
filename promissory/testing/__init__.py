"""Testing helpers: crash tests in child processes, and side effects counted across them.

``crash_test`` (a pytest fixture, installed with promissory) and ``CrashSuite`` run a user's
scenario cleanly, then killed with SIGKILL at every step boundary and at random moments, and
check that nothing changed; ``effect`` records a side effect so the suite can count it.
"""

from ._effects import EffectRecord, effect, read_effects, read_log
from ._harness import CrashTest, Run
from ._replay import check_replay, check_replays
from ._suite import CrashFailure, CrashReport, CrashSuite, reset_schema

__all__ = [
    "CrashFailure",
    "CrashReport",
    "CrashSuite",
    "CrashTest",
    "EffectRecord",
    "Run",
    "check_replay",
    "check_replays",
    "effect",
    "read_effects",
    "read_log",
    "reset_schema",
]
