"""Named points where a crash test may kill the process, and nothing else.

The runtime calls ``reached(point, id)`` at each boundary a crash can fall on: a message
committed, a step about to run, a step kept, a handler returned, a message settled. Normally
that is a no-op. A crash-test child process arms it through ``$PROMISSORY_CRASH_AT``
(``point:n``, kill at the n-th time ``point`` is reached, counting from 1), and it then kills
its own process with SIGKILL right there, after printing the point and id to stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

POINTS = (
    "message.committed",
    "step.started",
    "step.kept",
    "handler.returned",
    "message.settled",
    "effect.ran",
)
"""Every point the runtime reports, in the order a message passes them; ``effect.ran`` is
reported by ``promissory.testing.effect``, from inside a step's function."""

_lock = threading.Lock()
_armed: tuple[str, int] | None = None
_counts: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Arm from a ``point:n`` spec (``None`` or empty disarms)."""
    global _armed
    if not spec:
        _armed = None
        return
    point, _, n = spec.rpartition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"not a crash point spec: {spec!r} (points: {', '.join(POINTS)})")
    _armed = (point, int(n))


def reached(point: str, id: str) -> None:
    """Note that ``point`` was reached for ``id``; kill the process if this is the armed one."""
    if _armed is None or _armed[0] != point:
        return
    with _lock:
        _counts[point] = count = _counts.get(point, 0) + 1
    if count == _armed[1]:
        sys.stderr.write(f"promissory crash point {point} #{count} at {id}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


arm(os.environ.get("PROMISSORY_CRASH_AT"))
