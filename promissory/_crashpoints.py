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
from collections.abc import Iterable

POINTS = (
    "message.committed",
    "step.started",
    "step.kept",
    "handler.returned",
    "message.settled",
    "effect.ran",
    "actor.ended",
    "exit.recorded",
    "actor.revived",
    "actor.bounced",
    "actors.taken_up",
)
"""Every point the runtime reports, in the order a message passes them; ``effect.ran`` is
reported by ``promissory.testing.effect``, from inside a step's function, and ``actor.ended``
as each actor of a tree being ended (stopped, canceled, given up) is ended. The last three
follow the commits of supervision's own bookkeeping, before what depends on them: a child's
exit recorded (and sent to its supervisor), an actor's next incarnation recorded (by its
supervisor or the root policy), an actor's activation fenced off for a restart of its
siblings. ``actors.taken_up`` follows the commit of a take-up's claim of many actors at once
(the recovery pass), before any of their activations starts."""

DROP_ENV = "PROMISSORY_DROP_AT"
"""``label:n``: the group-commit writer cuts its connection inside the COMMIT of the n-th batch
holding an op of that label (``exit``, ``revive``, ``complete``…), after the COMMIT was sent
and before its answer is read: the outcome is unknown to the writer, which must find out."""

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


COUNT_ENV = "PROMISSORY_COUNT_POINTS"
"""Set (to anything): count every point reached and every batch committed, by label, for
``counted()`` (a crash suite's clean run tells it where the kills and drops can go)."""

_counting = bool(os.environ.get(COUNT_ENV))
_seen: dict[str, int] = {}


def counted() -> dict[str, int]:
    """How often each point was reached, and (``batch:<label>``) how many batches held an op
    of each label, in this process so far (with ``$PROMISSORY_COUNT_POINTS`` set).
    """
    with _lock:
        return dict(_seen)


def reached(point: str, id: str) -> None:
    """Note that ``point`` was reached for ``id``; kill the process if this is the armed one."""
    if _counting:
        with _lock:
            _seen[point] = _seen.get(point, 0) + 1
    if _armed is None or _armed[0] != point:
        return
    with _lock:
        _counts[point] = count = _counts.get(point, 0) + 1
    if count == _armed[1]:
        sys.stderr.write(f"promissory crash point {point} #{count} at {id}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


_drop: tuple[str, int] | None = None


def arm_drop(spec: str | None) -> None:
    """Arm a connection drop from a ``label:n`` spec (``None`` or empty disarms)."""
    global _drop
    if not spec:
        _drop = None
        return
    label, _, n = spec.rpartition(":")
    if not label or not n.isdigit() or int(n) < 1:
        raise ValueError(f"not a connection drop spec: {spec!r} (label:n)")
    _drop = (label, int(n))


def dropping() -> bool:
    """Whether a connection drop is armed or batches are counted (a cheap check for the
    writer's hot path).
    """
    return _drop is not None or _counting


def drop_due(labels: Iterable[str]) -> bool:
    """Whether the writer should cut its connection in this batch's COMMIT (``labels``: its
    ops'), counting batches that hold the armed label; says so on stderr when it is due.
    """
    if _counting:
        with _lock:
            for label in set(labels):
                _seen[f"batch:{label}"] = _seen.get(f"batch:{label}", 0) + 1
    if _drop is None:
        return False
    label, n = _drop
    if label not in labels:
        return False
    key = f"drop:{label}"
    with _lock:
        _counts[key] = count = _counts.get(key, 0) + 1
    if count != n:
        return False
    sys.stderr.write(f"promissory connection drop {label} #{count}\n")
    sys.stderr.flush()
    return True


_effects_path = os.environ.get(EFFECTS_ENV)
"""Read once, as the other switches here are: a crash test sets it for a child process, and
looking it up in the environment on every step cost each step microseconds."""


def log_effect(*fields: str) -> None:
    """Append one tab-separated line to the effects file, if a crash test set one."""
    path = _effects_path
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
arm_drop(os.environ.get(DROP_ENV))
