"""Child specs and the pure rules of restarting: OTP's restart table and intensity window.

``ChildSpec`` says how an actor is treated when it fails: its restart type, how it is shut
down, whether it is significant, and an optional backoff. ``should_restart`` is OTP's table of
(restart type, exit kind); ``intensity_allows`` is OTP's sliding window of restart times,
a pure function of the history and the time, kept in the store by the caller.
"""

from __future__ import annotations

import enum
import random

import msgspec

from ..errors import InvalidInputError

__all__ = ["Backoff", "ChildSpec", "Exit", "Restart"]


class Restart(enum.StrEnum):
    """When a child is restarted (OTP's restart types)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only after an abnormal exit (a crash or an escalation), not after a normal
    stop or a shutdown."""
    TEMPORARY = "temporary"
    """Never restarted; its spec is forgotten when it ends."""


class Exit(enum.StrEnum):
    """How an actor ended, as its supervisor sees it."""

    NORMAL = "normal"
    """It stopped on purpose (or its work was done)."""
    SHUTDOWN = "shutdown"
    """Its supervisor or the runtime stopped it; cancellation counts as this too."""
    ABNORMAL = "abnormal"
    """A handler raised."""
    ESCALATED = "escalated"
    """It was a supervisor whose children failed past its intensity: abnormal, but named,
    so a transient parent still restarts it (OTP would call this ``shutdown``)."""


def should_restart(restart: Restart, exit: Exit) -> bool:
    """OTP's restart table: whether a child of ``restart`` type is restarted after ``exit``."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TEMPORARY:
        return False
    return exit in (Exit.ABNORMAL, Exit.ESCALATED)


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff between restarts of one child (Akka's restartWithBackoff).

    Attributes:
        min: seconds before the first restart.
        max: the delay stops growing here.
        jitter: each delay is scaled by a random factor in ``[1, 1 + jitter]``.
        reset_after: a child that ran this long without failing starts over at ``min``.

    """

    min: float = 0.1
    max: float = 30.0
    jitter: float = 0.2
    reset_after: float | None = None

    def delay(self, restarts: int, rand: float | None = None) -> float:
        """Seconds to wait before restart number ``restarts`` (1-based) of a run of failures."""
        base: float = min(self.max, self.min * 2.0 ** max(0, restarts - 1))
        r = random.random() if rand is None else rand
        return base * (1 + self.jitter * r)


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How an actor is supervised, stored in its row and set where it is spawned.

    Attributes:
        restart: ``permanent`` (default), ``transient`` or ``temporary``.
        shutdown: seconds to let it finish its current message when it is stopped; 0 is a
            brutal kill (fenced at once); ``None`` waits as long as it takes.
        significant: its normal end may end its supervisor (``auto_shutdown``).
        backoff: wait between restarts; none by default (restart at once).
        intensity: for an actor with no supervisor, restarts allowed in ``period``.
        period: seconds of the intensity window.

    """

    restart: Restart = Restart.PERMANENT
    shutdown: float | None = 5.0
    significant: bool = False
    backoff: Backoff | None = None
    intensity: int = 1
    period: float = 5.0

    def __post_init__(self) -> None:
        if self.significant and self.restart is Restart.PERMANENT:
            raise InvalidInputError(
                "a significant child must be transient or temporary (as in OTP)"
            )
        if self.intensity < 0 or self.period <= 0:
            raise InvalidInputError("intensity must be >= 0 and period > 0")


def intensity_allows(
    history: list[float], now: float, intensity: int, period: float
) -> tuple[bool, list[float]]:
    """OTP's sliding window: whether one more restart may happen at ``now``.

    ``history`` holds the times of earlier restarts (seconds, one clock). Returns whether the
    restart is allowed and the history to keep (with ``now`` added, and entries more than
    ``period`` old dropped; one exactly ``period`` old still counts, as in OTP). More than
    ``intensity`` restarts within ``period`` is too many.
    """
    recent = [t for t in history if now - t <= period]
    recent.append(now)
    return len(recent) <= intensity, recent
