"""When a schedule fires: cron expressions read by croniter, and the missed-firing policy.

Pure functions of their inputs (the database's clock is passed in as ``now``), so the policy
is tested exhaustively without a clock. Times are aware ``datetime``s; a cron expression is
read in the schedule's time zone (daylight saving included) and its firings are kept in UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from ..errors import InvalidInputError

__all__ = [
    "Firing",
    "Missed",
    "check_cron",
    "check_timezone",
    "next_after",
    "plan_firing",
    "run_id_for",
]


class Missed(enum.StrEnum):
    """What a schedule does with firings missed while no node ran it (later than its grace).

    ``SKIP``: none of them runs; the schedule goes on from the next firing. ``ONCE``: one run
    makes up for all of them, at the latest missed firing's time (its run id says which).
    """

    SKIP = "skip"
    ONCE = "once"


class Firing(msgspec.Struct, frozen=True):
    """What to do with a schedule that is due: the firing to make (``None``: none, the
    missed firings are skipped) and the schedule's next firing after that.
    """

    fire_at: datetime | None
    next_at: datetime


_TICK = timedelta(microseconds=1)


def check_cron(expression: object) -> str:
    """Return ``expression`` if croniter reads it: five fields (minute hour day month
    weekday), or six with seconds last.

    Raises:
        InvalidInputError: it is not a string, or not a cron expression (saying why).

    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidInputError(f"cron must be a cron expression string, not {expression!r}")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidInputError(
            f"cron {expression!r} has {len(fields)} fields; it needs 5 (minute hour day month "
            "weekday) or 6 (the same, then seconds)"
        )
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception as exc:  # croniter's errors say what is wrong, in their own words
        raise InvalidInputError(f"cron {expression!r} is not a cron expression: {exc}") from None
    return " ".join(fields)


def check_timezone(name: object) -> ZoneInfo:
    """The time zone named ``name`` (IANA, such as ``"Europe/Paris"``, or ``"UTC"``).

    Raises:
        InvalidInputError: no time zone has that name.

    """
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"timezone must be an IANA time zone name, not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"timezone {name!r} is not a known IANA time zone (such as 'UTC' or 'Europe/Paris')"
        ) from None


def next_after(expression: str, zone: str, after: datetime) -> datetime:
    """The first firing of ``expression`` (read in ``zone``) strictly after ``after``, in UTC."""
    start = after.astimezone(ZoneInfo(zone))
    found: datetime = croniter(expression, start).get_next(datetime)
    return found.astimezone(UTC)


def _last_before(expression: str, zone: str, before: datetime) -> datetime:
    """The last firing strictly before ``before``, in UTC."""
    start = before.astimezone(ZoneInfo(zone))
    found: datetime = croniter(expression, start).get_prev(datetime)
    return found.astimezone(UTC)


def plan_firing(
    expression: str,
    zone: str,
    next_at: datetime,
    now: datetime,
    missed: Missed,
    grace: float,
) -> Firing:
    """What to do with a schedule due at ``next_at`` when the clock reads ``now``.

    A firing at most ``grace`` seconds late is made as usual (one after another, when several
    are). Firings later than that were missed: ``SKIP`` makes none of them, ``ONCE`` makes
    the latest of them; either way the schedule goes on from the first firing within grace.

    Example:
        >>> t = datetime(2026, 1, 1, 7, tzinfo=UTC)
        >>> plan_firing("0 7 * * *", "UTC", t, t + timedelta(seconds=3), Missed.SKIP, 60)
        Firing(fire_at=datetime.datetime(2026, 1, 1, 7, 0, tzinfo=datetime.timezone.utc), \
next_at=datetime.datetime(2026, 1, 2, 7, 0, tzinfo=datetime.timezone.utc))

    """
    cutoff = now - timedelta(seconds=grace)
    if next_at >= cutoff:
        return Firing(next_at, next_after(expression, zone, next_at))
    first_on_time = next_after(expression, zone, cutoff - _TICK)
    if missed is Missed.SKIP:
        return Firing(None, first_on_time)
    return Firing(_last_before(expression, zone, cutoff), first_on_time)


def run_id_for(schedule_id: str, fire_at: datetime) -> str:
    """The id of the run a firing starts: the schedule's id, then the firing time in UTC.

    Example:
        >>> run_id_for("reports/daily", datetime(2026, 1, 1, 7, tzinfo=UTC))
        'reports/daily/2026-01-01T07:00:00Z'

    """
    return f"{schedule_id}/{fire_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
