"""When a schedule fires: cron expressions and the missed-firing policy, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from promissory.errors import InvalidInputError
from promissory.runtime import Missed
from promissory.runtime._cron import (
    Firing,
    check_cron,
    check_timezone,
    next_after,
    plan_firing,
    run_id_for,
)

T7 = datetime(2026, 1, 1, 7, tzinfo=UTC)
DAILY = "0 7 * * *"


def test_a_firing_within_grace_is_made_and_the_next_one_follows() -> None:
    firing = plan_firing(DAILY, "UTC", T7, T7 + timedelta(seconds=59), Missed.SKIP, 60)
    assert firing == Firing(T7, T7 + timedelta(days=1))


def test_firings_missed_past_grace_are_skipped_with_skip() -> None:
    now = T7 + timedelta(days=3, hours=2)
    firing = plan_firing(DAILY, "UTC", T7, now, Missed.SKIP, 60)
    assert firing == Firing(None, T7 + timedelta(days=4))


def test_firings_missed_past_grace_make_one_run_at_the_latest_with_once() -> None:
    now = T7 + timedelta(days=3, hours=2)
    firing = plan_firing(DAILY, "UTC", T7, now, Missed.ONCE, 60)
    assert firing == Firing(T7 + timedelta(days=3), T7 + timedelta(days=4))


def test_a_missed_firing_goes_on_from_the_first_one_within_grace() -> None:
    # Every second, down for 100 s, grace 5 s: the catch-up run is the last one before the
    # grace window; the firings inside it are made one by one, as usual.
    now = T7 + timedelta(seconds=100, microseconds=500)
    firing = plan_firing("* * * * * *", "UTC", T7, now, Missed.ONCE, 5)
    assert firing == Firing(T7 + timedelta(seconds=95), T7 + timedelta(seconds=96))


def test_an_expression_is_read_in_its_time_zone_across_daylight_saving() -> None:
    # 07:00 in Paris is 06:00 UTC in winter and 05:00 UTC in summer (from 29 March 2026).
    before = datetime(2026, 3, 28, 12, tzinfo=UTC)
    first = next_after(DAILY, "Europe/Paris", before)
    second = next_after(DAILY, "Europe/Paris", first)
    assert first == datetime(2026, 3, 29, 5, tzinfo=UTC)
    assert second == datetime(2026, 3, 30, 5, tzinfo=UTC)
    assert next_after(DAILY, "Europe/Paris", datetime(2026, 1, 5, tzinfo=UTC)).hour == 6


def test_a_run_id_is_the_schedule_id_and_the_firing_time_in_utc() -> None:
    paris = T7.astimezone(check_timezone("Europe/Paris"))
    assert run_id_for("reports/daily", paris) == "reports/daily/2026-01-01T07:00:00Z"


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "cron expression string"),
        ("0 7 * *", "has 4 fields"),
        ("61 * * * *", "is not a cron expression"),
        ("0 7 * * * * *", "has 7 fields"),
        ("every day", "has 2 fields"),
    ],
)
def test_a_bad_cron_expression_is_refused_saying_why(expression: str, says: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        check_cron(expression)


def test_an_unknown_time_zone_is_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="'Mars/Olympus' is not a known IANA time zone"):
        check_timezone("Mars/Olympus")
