"""The runtime: a node's lifecycle, its event loop, recovery, timers, schedules and live
actors.
"""

from ._cron import Missed
from ._recovery import RecoveryReport
from ._runtime import Runtime

__all__ = ["Missed", "RecoveryReport", "Runtime"]


# -- for the layers above: not user API (no promise of stability), but the one door to this
# package's insides; tests/test_package.py refuses an import of a private module across layers.
from ._scheduler import (
    pause_schedule as pause_schedule,
    resume_schedule as resume_schedule,
)

__internal__ = ["pause_schedule", "resume_schedule"]
"""Names the layers above import from here that are not in ``__all__``."""
