"""The runtime: a node's lifecycle, its event loop, recovery, timers and live actors."""

from ._recovery import RecoveryReport
from ._runtime import Runtime

__all__ = ["RecoveryReport", "Runtime"]
