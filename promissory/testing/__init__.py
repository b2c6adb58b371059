"""Testing helpers: crash tests in child processes, and side effects counted across them.

``crash_test`` (a pytest fixture, installed with promissory) and ``CrashSuite`` run a user's
scenario cleanly, then killed with SIGKILL at every step boundary and at random moments, and
check that nothing changed; ``effect`` records a side effect so the suite can count it.
``fresh_schema`` gives a test a schema of its own, and ``kept_steps`` the steps kept in it.
"""

from ._effects import EffectRecord, effect, read_effects, read_log
from ._harness import CrashTest, Run
from ._replay import check_replay, check_replays
from ._schemas import fresh_schema
from ._suite import CrashFailure, CrashReport, CrashSuite, kept_steps, reset_schema

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
    "fresh_schema",
    "kept_steps",
    "read_effects",
    "read_log",
    "reset_schema",
]
