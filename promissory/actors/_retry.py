"""``RetryPolicy``: how a step is retried, and the pure decision of when to try again."""

from __future__ import annotations

import random

import msgspec
import msgspec.structs

from ..errors import InvalidInputError

__all__ = ["RetryPolicy"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When and how often a failing step is tried again.

    The attempt count and the time of the next attempt are kept in the step's row, so a
    backoff survives a crash and does not start over.

    Attributes:
        max_attempts: attempts in all, the first included (1 means no retry).
        initial_interval: seconds before the second attempt.
        multiplier: each interval is the previous one times this.
        max_interval: intervals stop growing here.
        jitter: each interval is scaled by a random factor in ``[1 - jitter, 1 + jitter]``.
        non_retryable: exception types (``ValueError``) or their names (``"ValueError"`` or
            ``"module.QualName"``) that fail the step at once; subclasses match too. Types
            are kept as their qualified names. An exception with ``retryable = False``
            fails at once too, and one with a ``retry_after`` (seconds) waits at least
            that long.

    Example:
        >>> RetryPolicy(max_attempts=5, initial_interval=0.5, non_retryable=(KeyError, "HTTPError"))
        RetryPolicy(max_attempts=5, initial_interval=0.5, multiplier=2.0, max_interval=60.0, jitter=0.1, non_retryable=('builtins.KeyError', 'HTTPError'))

    """  # noqa: E501

    max_attempts: int = 3
    initial_interval: float = 1.0
    multiplier: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[str | type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.non_retryable, str | type):
            raise InvalidInputError(
                f"non_retryable takes a tuple of exception types or names, not "
                f"{self.non_retryable!r} alone: write ({self.non_retryable!r},)"
            )
        names = []
        for entry in self.non_retryable:
            if isinstance(entry, type) and issubclass(entry, BaseException):
                names.append(_qualified(entry))
            elif isinstance(entry, str) and entry:
                names.append(entry)
            else:
                raise InvalidInputError(
                    "non_retryable takes exception types or their names, not "
                    f"{entry!r} ({type(entry).__name__})"
                )
        msgspec.structs.force_setattr(self, "non_retryable", tuple(names))
        if self.max_attempts < 1:
            raise InvalidInputError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_interval < 0 or self.max_interval < 0:
            raise InvalidInputError("retry intervals must not be negative")
        if self.multiplier < 1:
            raise InvalidInputError(f"multiplier must be at least 1, not {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise InvalidInputError(f"jitter must be between 0 and 1, not {self.jitter}")

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is of a kind this policy retries at all."""
        if not isinstance(exc, Exception):
            return False
        if getattr(exc, "retryable", True) is False:
            return False  # the error says so itself (a model's 400, a bad API key)
        names = {n for cls in type(exc).__mro__ for n in (cls.__name__, _qualified(cls))}
        return not names.intersection(self.non_retryable)

    def delay(self, attempt: int, rand: float | None = None) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1-based), ``None`` to give up.

        ``rand`` in ``[0, 1)`` picks the jitter (random when omitted), so tests can pin it.
        """
        if attempt >= self.max_attempts:
            return None
        base = min(self.max_interval, self.initial_interval * self.multiplier ** (attempt - 1))
        r = random.random() if rand is None else rand
        return max(0.0, base * (1 + self.jitter * (2 * r - 1)))


NO_RETRY = RetryPolicy(max_attempts=1)
"""Run once; a failure is final."""


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
