"""The timer service: durable sleeps fire when they come due, in due order."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec

from promissory.actors import Context, DurableActor, handler
from promissory.runtime import Runtime
from tests.actors.kit import TALLY, Nap, sql


class At(msgspec.Struct):
    when: datetime


def wake(actor_id: str) -> None:
    TALLY.log("wakes", actor_id)


class Alarm(DurableActor):
    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        ctx.sleep(msg.seconds)
        ctx.step(wake, ctx.actor_id)
        return ctx.actor_id

    @handler
    def at(self, ctx: Context, msg: At) -> str:
        ctx.sleep_until(msg.when)
        return "on time"


def test_sleeps_of_different_lengths_in_different_actors_wake_in_due_order(dsn: str) -> None:
    TALLY.clear()
    # Half a second apart, so they come due in the order of their lengths however slowly a
    # loaded machine sends them one after another; wakes and firings are then compared with
    # the timers' own due order.
    lengths = {"alarms/a": 2.0, "alarms/b": 0.5, "alarms/c": 1.5, "alarms/d": 1.0}
    with Runtime(dsn, suspend_after=0.02) as rt:
        replies = [rt.spawn(Alarm, id=a).ask(Nap(s)) for a, s in lengths.items()]
        assert [r.get(timeout=30) for r in replies] == list(lengths)
    actor_of = {f"{r.id}/1": a for r, a in zip(replies, lengths, strict=True)}
    due = [
        r[0] for r in sql(dsn, "SELECT id FROM promises WHERE kind = 'timer' ORDER BY timeout_at")
    ]
    assert [actor_of[t] for t in due] == ["alarms/b", "alarms/d", "alarms/c", "alarms/a"]
    assert TALLY.logs["wakes"] == [actor_of[t] for t in due]
    timers = sql(
        dsn,
        "SELECT id, settled_at >= timeout_at FROM promises WHERE kind = 'timer' "
        "ORDER BY settled_at",
    )
    assert [t[0] for t in timers] == due
    assert all(t[1] for t in timers), "no timer fired early"


def test_a_sleep_of_zero_or_until_a_past_time_goes_on_at_once(dsn: str) -> None:
    with Runtime(dsn, suspend_after=0.02) as rt:
        ref = rt.spawn(Alarm, id="alarm")
        started = time.monotonic()
        assert ref.ask(Nap(0)).get(timeout=5) == "alarm"
        past = datetime.now(UTC) - timedelta(hours=1)
        assert ref.ask(At(past)).get(timeout=5) == "on time"
        # Only guards against waiting on the timer service: slack for a loaded machine.
        assert time.monotonic() - started < 3
        assert rt.host.suspended_count() == 0
