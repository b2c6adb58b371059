"""Crash tests' hooks in the runtime: named points where a test may kill the process, and the
side-effect log.

The runtime calls ``reached(point, id)`` at each boundary a crash can fall on: a message
committed, a step about to run, a step kept, a handler returned, a message settled. Normally
that is a no-op. A crash-test child process arms it through ``$PROMISSORY_CRASH_AT``
(``point:n``, kill at the n-th time ``point`` is reached, counting from 1), and it then kills
its own process with SIGKILL right there, after printing the point and id to stderr.

With ``$PROMISSORY_EFFECTS`` set (a file), every step that starts running is logged there
(``step_started``), and so is every effect code records with ``promissory.testing.effect``;
appends of one short line are atomic and survive the writer's SIGKILL.
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
    "actor.ended",
)
"""Every point the runtime reports, in the order a message passes them; ``effect.ran`` is
reported by ``promissory.testing.effect``, from inside a step's function, and ``actor.ended``
as each actor of a tree being ended (stopped, canceled, given up) is ended."""

EFFECTS_ENV = "PROMISSORY_EFFECTS"

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


def log_effect(*fields: str) -> None:
    """Append one tab-separated line to the effects file, if a crash test set one."""
    path = os.environ.get(EFFECTS_ENV)
    if not path:
        return
    line = ("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def step_started(label: str, id: str) -> None:
    """A step is about to run its function: log it (for crash tests) and report the point."""
    log_effect("step", label, id)
    reached("step.started", id)


arm(os.environ.get("PROMISSORY_CRASH_AT"))
