"""Durable waits: sleep, sleep_until, external promises (settled from another process), timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.errors import PromiseTimedOutError
from promissory.runtime import Runtime
from promissory.store import Store
from tests.actors.kit import TALLY, Nap, eventually, one, python, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        yield rt


class Approval(msgspec.Struct):
    approved: bool
    by: str


class Ask(msgspec.Struct):
    id: str | None = None
    timeout: float | None = None


class Until(msgspec.Struct):
    after: float


class Napper(DurableActor):
    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        TALLY.hit(f"run:{ctx.message_id}")
        ctx.sleep(msg.seconds)
        return "rested"

    @handler
    def until(self, ctx: Context, msg: Until) -> list[datetime]:
        start = ctx.now()
        ctx.sleep_until(start + timedelta(seconds=msg.after))
        return [start, ctx.now()]


def test_a_sleeping_handler_holds_no_thread_and_continues_when_the_timer_fires(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Napper, id="napper")
    started = time.monotonic()
    # Long enough that the checks below see it suspended before the timer fires, however
    # slowly a loaded machine gets to them.
    reply = ref.ask(Nap(2.0))
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    assert rt.host.live_activations() == 0
    assert not reply.done()
    assert one(dsn, "SELECT awaiting FROM promises WHERE id = %s", reply.id) == [f"{reply.id}/1"]
    assert reply.get(timeout=30) == "rested"
    assert time.monotonic() - started >= 2.0
    assert rt.host.suspended_count() == 0
    assert TALLY.counts[f"run:{reply.id}"] == 2
    assert one(dsn, "SELECT kind, state FROM promises WHERE id = %s", f"{reply.id}/1") == (
        "timer",
        "resolved",
    )


def test_sleep_until_waits_until_the_given_time_by_the_database_clock(rt: Runtime) -> None:
    ref = rt.spawn(Napper, id="napper")
    start, end = ref.ask(Until(0.3)).get(timeout=5, type=list[datetime])
    assert end - start >= timedelta(seconds=0.3)


class Approver(DurableActor):
    @handler
    def ask(self, ctx: Context, msg: Ask) -> Any:
        timeout = timedelta(seconds=msg.timeout) if msg.timeout is not None else None
        promise = ctx.promise(id=msg.id, timeout=timeout, param={"asked_by": ctx.actor_id})
        TALLY.log("promise", promise.id)
        try:
            approval: Approval = promise.result(Approval)
        except PromiseTimedOutError as exc:
            return f"timed out: {exc.promise_id}"
        return [approval.approved, approval.by]


RESOLVE = """
import sys
from promissory.store import Store
with Store(sys.argv[1]) as store:
    store.resolve(sys.argv[2], {"approved": True, "by": "a human"})
"""


def test_a_promise_settled_from_another_process_wakes_the_suspended_handler(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Approver, id="approver")
    reply = ref.ask(Ask(), id="approver/m-1")
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    assert rt.host.live_activations() == 0
    promise_id = "approver/m-1/1"
    assert one(dsn, "SELECT kind, state, param FROM promises WHERE id = %s", promise_id) == (
        "promise",
        "pending",
        {"asked_by": "approver"},
    )
    python("-c", RESOLVE, dsn, promise_id)
    assert reply.get(timeout=5) == [True, "a human"]
    assert TALLY.logs["promise"] == [promise_id, promise_id]


def test_a_promise_with_a_custom_id_is_created_under_that_id(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Approver, id="approver")
    reply = ref.ask(Ask(id="approvals/1"))
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    with Store(dsn) as store:
        assert store.get("approvals/1").param_as(dict) == {"asked_by": "approver"}
        store.resolve("approvals/1", Approval(False, "the board"))
    assert reply.get(timeout=5) == [False, "the board"]
    # The step records which promise it made, so a replay waits on the same one.
    assert one(dsn, "SELECT value FROM promises WHERE id = %s", f"{reply.id}/1") == {
        "promise": "approvals/1"
    }
    assert TALLY.logs["promise"] == ["approvals/1", "approvals/1"]


def test_a_promise_that_times_out_raises_promise_timed_out_in_the_handler(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Approver, id="approver")
    started = time.monotonic()
    reply = ref.ask(Ask(timeout=0.2))
    assert reply.get(timeout=5) == f"timed out: {reply.id}/1"
    assert time.monotonic() - started >= 0.2
    assert one(dsn, "SELECT state FROM promises WHERE id = %s", f"{reply.id}/1") == (
        "rejected_timedout"
    )


# -- determinism of now() and random() -----------------------------------------------------------


class Dice(DurableActor):
    @handler
    def nap(self, ctx: Context, msg: Nap) -> list[Any]:
        now = ctx.now()
        rolls = [ctx.random() for _ in range(3)]
        TALLY.log(ctx.message_id, (now, rolls))
        ctx.sleep(msg.seconds)
        return [now.isoformat(), rolls]


def test_now_and_random_return_the_same_values_when_the_message_is_replayed(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Dice, id="dice")
    # Sleeps far past suspend_after, so each message suspends and is replayed once however
    # slowly its handler reaches the sleep (a timer due by then is waited out in-thread).
    first, second = ref.ask(Nap(1.0)), ref.ask(Nap(1.0))
    a, b = first.get(timeout=30), second.get(timeout=30)
    runs = TALLY.logs[first.id]
    assert len(runs) == 2 and runs[0] == runs[1], "the replay saw the first run's values"
    assert runs[0][0].isoformat() == a[0]
    assert a[1] == runs[0][1]
    assert a[1] != b[1], "another message draws another sequence"
    kept = one(dsn, "SELECT value #>> '{}' FROM promises WHERE id = %s", f"{first.id}/1")
    assert datetime.fromisoformat(kept) == runs[0][0]
    assert len(sql(dsn, "SELECT 1 FROM promises WHERE id LIKE %s", f"{first.id}/%")) == 2


class Refused(Exception):
    pass


class Outcomes(DurableActor):
    @handler
    def ask(self, ctx: Context, msg: Ask) -> str:
        try:
            ctx.promise(id=msg.id).result()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "resolved"


def test_a_promise_rejected_or_canceled_from_outside_raises_in_the_handler(rt: Runtime) -> None:
    ref = rt.spawn(Outcomes, id="outcomes")
    rejected = ref.ask(Ask(id="ext/rejected"))
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    canceled = ref.ask(Ask(id="ext/canceled"))
    with Store(rt.store.dsn) as store:  # type: ignore[union-attr]
        store.reject("ext/rejected", Refused("the reviewer said no"))
        store.create("ext/canceled")
        store.cancel("ext/canceled", "withdrawn")
    assert rejected.get(timeout=5) == "Refused: the reviewer said no"
    assert canceled.get(timeout=5) == "PromiseCanceledError: withdrawn"
