"""Schedules on a runtime: each firing a run with a deterministic id, made once; the missed
policy after a stop; pause, resume and delete; bad definitions refused with nothing written.

A one-second cron is the short clock; a fake clock (the rows' times moved into the past, as
``tests.kit.time_passes`` does for promises) stands for a long stop.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from promissory import Agent, Context, DurableActor, Missed, Runtime, handler
from promissory.agents import FunctionModel
from promissory.errors import (
    ActorTypeNotHostedError,
    InvalidDefinitionError,
    InvalidInputError,
    ScheduleNotFoundError,
)
from tests.kit import eventually, sql, time_passes

calls: list[str] = []
lock = threading.Lock()


def answer(request: object) -> str:
    with lock:
        calls.append("tick")
    return "tick"


clock = Agent("sched-clock", "Say tick.", model=FunctionModel(answer, name="tick"))


def runs(dsn: str, prefix: str) -> list[tuple[str, str]]:
    """(id, state) of the top-level runs under ``prefix``, by id."""
    return sql(
        dsn,
        "SELECT id, state FROM promises WHERE kind = 'message' AND id = recipient "
        "AND starts_with(id, %s) ORDER BY id",
        prefix,
    )


def test_an_every_second_schedule_makes_one_run_per_second_with_its_time_in_the_id(
    rt: Runtime, dsn: str
) -> None:
    schedule = rt.schedule("ticks/fast", cron="* * * * * *", agent=clock, task="tick")
    assert schedule.kind == "agent:sched-clock" and schedule.task == "tick"
    eventually(lambda: len(runs(dsn, "ticks/fast/")) >= 3, what="three firings")
    rt.pause_schedule("ticks/fast")
    kept = runs(dsn, "ticks/fast/")
    times = [datetime.strptime(id.rsplit("/", 1)[1], "%Y-%m-%dT%H:%M:%SZ") for id, _ in kept]
    assert all(b - a == timedelta(seconds=1) for a, b in zip(times, times[1:], strict=False))
    handle = rt.start(clock, "again", id=kept[0][0])  # the id is the firing's idempotency key
    assert handle.reused and handle.result(timeout=10) == "tick"
    eventually(lambda: all(state == "resolved" for _, state in runs(dsn, "ticks/fast/")))
    [row] = sql(dsn, "SELECT last_run, paused FROM schedules WHERE id = 'ticks/fast'")
    assert row[0] == runs(dsn, "ticks/fast/")[-1][0] and row[1] is True


def test_a_paused_schedule_fires_nothing_and_resumes_from_now(rt: Runtime, dsn: str) -> None:
    rt.schedule("ticks/paused", cron="* * * * * *", agent=clock, task="tick")
    rt.pause_schedule("ticks/paused")
    sql(
        dsn, "UPDATE schedules SET next_at = next_at - interval '1 hour' RETURNING id"
    )  # long overdue
    rt.scheduler.tick()
    assert runs(dsn, "ticks/paused/") == []
    resumed = rt.resume_schedule("ticks/paused")
    assert not resumed.paused and resumed.next_at > datetime.now(UTC) - timedelta(seconds=5)
    eventually(lambda: runs(dsn, "ticks/paused/"), what="a firing after resume")
    first = runs(dsn, "ticks/paused/")[0][0]
    assert first > f"ticks/paused/{resumed.next_at - timedelta(seconds=1):%Y-%m-%dT%H:%M:%SZ}"
    assert rt.delete_schedule("ticks/paused") is True
    assert rt.delete_schedule("ticks/paused") is False
    assert rt.schedules() == []
    with pytest.raises(ScheduleNotFoundError, match="'ticks/paused'"):
        rt.pause_schedule("ticks/paused")


def test_a_firing_under_way_when_its_schedule_is_paused_still_records_its_run(
    rt: Runtime, dsn: str
) -> None:
    # The race an every-second schedule can hit: the node claims a firing, a person pauses
    # the schedule, the node starts the run and then moves the schedule on.
    from promissory.store._schedules import advance_schedule, claim_firing

    rt.schedule("ticks/race", cron="0 7 * * *", agent=clock, task="tick")
    rt.pause_schedule("ticks/race")
    [(at,)] = sql(
        dsn, "UPDATE schedules SET paused = false WHERE id = 'ticks/race' RETURNING next_at"
    )
    store, node = rt.store, "the-node"
    assert claim_firing(store, "ticks/race", at, node)
    rt.pause_schedule("ticks/race")
    assert advance_schedule(
        store, "ticks/race", at, node, at + timedelta(days=1), at, "ticks/race/the-run"
    )
    [row] = sql(dsn, "SELECT last_run, paused, claimed_by FROM schedules WHERE id = 'ticks/race'")
    assert row == ("ticks/race/the-run", True, None)
    # A resume starts from a fresh claim.
    sql(dsn, "UPDATE schedules SET claimed_by = 'gone' WHERE id = 'ticks/race' RETURNING id")
    rt.resume_schedule("ticks/race")
    assert sql(dsn, "SELECT claimed_by FROM schedules WHERE id = 'ticks/race'") == [(None,)]


@pytest.mark.parametrize(("missed", "made"), [(Missed.ONCE, 1), (Missed.SKIP, 0)])
def test_firings_missed_while_no_node_ran_follow_the_policy(
    dsn: str, missed: Missed, made: int
) -> None:
    # Hourly, at a minute half an hour from now: the real clock cannot reach a firing while
    # the test runs (at "0 * * * *", a run near the top of the hour made a real firing too).
    cron = f"{(datetime.now(UTC).minute + 30) % 60} * * * *"
    with Runtime(dsn, schedule_poll=0.2) as rt:
        rt.schedule("reports/hourly", cron=cron, agent=clock, task="report", missed=missed)
    time_passes(dsn, 5 * 3600)  # nothing ran for five hours: five firings were missed
    [(due,)] = sql(dsn, "SELECT next_at FROM schedules")
    with Runtime(dsn, schedule_poll=0.2) as rt:
        eventually(
            lambda: sql(dsn, "SELECT next_at > now() FROM schedules")[0][0],
            what="the schedule moved on",
        )
        made_runs = runs(dsn, "reports/hourly/")
        assert len(made_runs) == made
        if made:
            assert (
                made_runs[0][0] == f"reports/hourly/{due + timedelta(hours=4):%Y-%m-%dT%H:%M:%SZ}"
            )
            assert rt.start(clock, "x", id=made_runs[0][0]).result(timeout=10) == "tick"
        [(next_at, last_run)] = sql(dsn, "SELECT next_at, last_run FROM schedules")
        assert next_at == due + timedelta(hours=5)
        assert last_run == (made_runs[0][0] if made else None)


def test_defining_an_id_again_changes_its_schedule_and_keeps_its_pause(rt: Runtime) -> None:
    rt.schedule("reports/x", cron="0 7 * * *", agent=clock, task="a")
    rt.pause_schedule("reports/x")
    changed = rt.schedule(
        "reports/x", cron="0 8 * * *", agent=clock, task="b", timezone="Asia/Tokyo"
    )
    assert (changed.cron, changed.task, changed.timezone, changed.paused) == (
        "0 8 * * *",
        "b",
        "Asia/Tokyo",
        True,
    )
    assert changed.next_at.astimezone(ZoneInfo("Asia/Tokyo")).hour == 8
    assert [s.id for s in rt.schedules()] == ["reports/x"]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"cron": "0 25 * * *"}, "cron '0 25 \\* \\* \\*' is not a cron expression"),
        ({"timezone": "Nowhere/Land"}, "'Nowhere/Land' is not a known IANA time zone"),
        ({"missed": "twice"}, "missed must be 'skip' or 'once', not 'twice'"),
        ({"grace": -1}, "grace must be ≥ 0 seconds"),
        ({"task": object()}, "the schedule's task"),
        ({"id": ""}, "schedule id must not be empty"),
    ],
)
def test_a_bad_definition_is_refused_saying_what_and_writes_nothing(
    rt: Runtime, dsn: str, kwargs: dict[str, object], says: str
) -> None:
    definition: dict[str, object] = {
        "id": "reports/bad",
        "cron": "0 7 * * *",
        "agent": clock,
        "task": "t",
        **kwargs,
    }
    with pytest.raises(InvalidInputError, match=says):
        rt.schedule(**definition)  # type: ignore[arg-type]
    assert sql(dsn, "SELECT count(*) FROM schedules") == [(0,)]


class Plain(DurableActor[None]):
    @handler
    def hello(self, ctx: Context, name: str) -> str:
        return name


def test_something_that_cannot_be_started_here_is_refused(rt: Runtime, dsn: str) -> None:
    with pytest.raises(InvalidDefinitionError, match="cannot be scheduled: its actor class has no"):
        rt.schedule("reports/bad", cron="0 7 * * *", agent=Plain)
    with pytest.raises(ActorTypeNotHostedError, match="'tests.nothing:Here'"):
        rt.schedule("reports/bad", cron="0 7 * * *", agent="tests.nothing:Here")
    assert sql(dsn, "SELECT count(*) FROM schedules") == [(0,)]
