"""ctx.step: sync and async functions, typed results, retries with backoff, kept failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from promissory.actors import Context, DurableActor, RetryPolicy, current_step, handler
from promissory.runtime import Runtime
from tests.actors.kit import TALLY, Item, eventually, one, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        yield rt


class Point(msgspec.Struct, frozen=True):
    x: int
    y: int


class Go(msgspec.Struct):
    dsn: str = ""


# -- sync and async ----------------------------------------------------------------------------


def where_sync(tag: str) -> str:
    return threading.current_thread().name


async def where_async(tag: str) -> list[Any]:
    await asyncio.sleep(0.01)
    step = current_step()
    assert step is not None
    loop = asyncio.get_running_loop()
    TALLY.log("loops", loop)
    return [threading.current_thread().name, step.id]


class Threads(DurableActor):
    @handler
    def go(self, ctx: Context, msg: Go) -> list[Any]:
        here = threading.current_thread().name
        return [here, ctx.step(where_sync, "s"), ctx.step(where_async, "a")]


def test_a_sync_step_runs_on_the_actor_thread_and_an_async_one_on_the_runtime_loop(
    rt: Runtime,
) -> None:
    reply = rt.spawn(Threads, id="threads").ask(Go())
    handler_thread, sync_thread, (async_thread, async_step) = reply.get(timeout=5)
    assert sync_thread == handler_thread
    assert async_thread == rt.loop._thread.name != handler_thread
    assert TALLY.logs["loops"] == [rt.loop.loop]
    assert async_step == f"{reply.id}/2", "current_step() is set inside the coroutine too"


# -- typed results -----------------------------------------------------------------------------


def make_point(x: int) -> Point:
    TALLY.hit("make_point")
    return Point(x, -x)


async def make_points(n: int) -> list[Point]:
    TALLY.hit("make_points")
    return [Point(i, i) for i in range(n)]


def make_tuple() -> tuple[int, str]:
    return (1, "one")


class Typed(DurableActor):
    @handler
    def go(self, ctx: Context, msg: Item) -> list[str]:
        p = ctx.step(make_point, msg.n)
        ps = ctx.step(make_points, 2)
        t = ctx.step(make_tuple)
        raw = ctx.step(make_point, 9, returns=dict)
        TALLY.log("typed", (type(p), p, [type(q) for q in ps], type(t), raw))
        ctx.sleep(0.1)
        return [type(p).__name__, type(ps[0]).__name__, type(t).__name__]


def test_a_step_result_comes_back_as_the_return_annotation_first_time_and_on_replay(
    rt: Runtime,
) -> None:
    reply = rt.spawn(Typed, id="typed").ask(Item(3))
    assert reply.get(timeout=5) == ["Point", "Point", "tuple"]
    runs = TALLY.logs["typed"]
    assert len(runs) == 2, "once for real, once replayed after the sleep"
    expected = (Point, Point(3, -3), [Point, Point], tuple, {"x": 9, "y": -9})
    assert runs == [expected, expected]
    assert TALLY.counts["make_point"] == 2  # two steps (x=3 and x=9), each run once
    assert TALLY.counts["make_points"] == 1


# -- retries -----------------------------------------------------------------------------------


class Flaky(Exception):
    pass


class Fatal(ValueError):
    pass


def retried(dsn: str, fail: int) -> str:
    step = current_step()
    assert step is not None
    rows = sql(
        dsn,
        "SELECT state, attempt, next_attempt_at IS NOT NULL FROM promises WHERE id = %s",
        step.id,
    )
    TALLY.log("attempts", (step.attempt, time.monotonic(), rows))
    if step.attempt <= fail:
        raise Flaky(f"attempt {step.attempt} failed")
    return f"ok after {step.attempt}"


def fatal() -> None:
    TALLY.hit("fatal")
    raise Fatal("do not retry me")


class Retrier(DurableActor):
    reply_errors = (Flaky, Fatal)

    @handler
    def go(self, ctx: Context, msg: Go) -> str:
        policy = RetryPolicy(max_attempts=4, initial_interval=0.05, multiplier=2, jitter=0)
        result: str = ctx.step(retried, msg.dsn, 2, retry=policy)
        return result

    @handler
    def fatal(self, ctx: Context, msg: Item) -> None:
        # By type: the same as by name (a type is kept as its qualified name).
        ctx.step(fatal, retry=RetryPolicy(max_attempts=5, non_retryable=(Fatal,)))


def test_a_retrying_step_keeps_its_attempt_and_next_attempt_time_in_its_row(
    rt: Runtime, dsn: str
) -> None:
    reply = rt.spawn(Retrier, id="retrier").ask(Go(dsn))
    assert reply.get(timeout=5) == "ok after 3"
    attempts = TALLY.logs["attempts"]
    assert [a[0] for a in attempts] == [1, 2, 3]
    # Before the first attempt there is no row; before each retry the row holds the attempt
    # that failed and when the next may start.
    assert [a[2] for a in attempts] == [[], [("pending", 1, True)], [("pending", 2, True)]]
    gaps = [b[1] - a[1] for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095, f"backoff 0.05 s then 0.1 s, got {gaps}"
    assert one(
        dsn, "SELECT state, attempt, value FROM promises WHERE id = %s", f"{reply.id}/1"
    ) == (
        "resolved",
        3,
        "ok after 3",
    )


def test_a_step_that_fails_with_a_non_retryable_error_fails_at_once(rt: Runtime, dsn: str) -> None:
    reply = rt.spawn(Retrier, id="retrier").ask(Item(0))
    with pytest.raises(Fatal, match="do not retry me"):
        reply.get(timeout=5)
    assert TALLY.counts["fatal"] == 1
    state, attempt, error = one(
        dsn, "SELECT state, attempt, value FROM promises WHERE id = %s", f"{reply.id}/1"
    )
    assert (state, attempt) == ("rejected", 1)
    assert error["type"] == f"{__name__}.Fatal"


def test_non_retryable_takes_types_or_names_and_refuses_anything_else() -> None:
    by_type = RetryPolicy(non_retryable=(Fatal, "KeyError"))
    assert by_type.non_retryable == (f"{__name__}.Fatal", "KeyError")
    assert not by_type.retries(Fatal("x")) and not by_type.retries(KeyError("k"))
    assert by_type.retries(Flaky("y"))
    with pytest.raises(ValueError, match=r"not 3 \(int\)"):
        RetryPolicy(non_retryable=(3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"not 'KeyError' alone: write \('KeyError',\)"):
        RetryPolicy(non_retryable="KeyError")  # type: ignore[arg-type]


class Slow(DurableActor):
    @handler
    def go(self, ctx: Context, msg: Go) -> str:
        policy = RetryPolicy(max_attempts=3, initial_interval=0.3, jitter=0)
        result: str = ctx.step(retried, msg.dsn, 1, retry=policy)
        return result


def test_a_long_backoff_waits_on_a_timer_without_holding_a_thread(rt: Runtime, dsn: str) -> None:
    reply = rt.spawn(Slow, id="slow").ask(Go(dsn))
    eventually(lambda: rt.host.suspended_count() == 1, what="the retry suspended")
    assert rt.host.live_activations() == 0
    assert reply.get(timeout=5) == "ok after 2"
    timer = one(dsn, "SELECT kind, state FROM promises WHERE id = %s", f"{reply.id}/1/retry-1")
    assert timer == ("timer", "resolved")
    assert [a[0] for a in TALLY.logs["attempts"]] == [1, 2]


# -- a final failure is kept ---------------------------------------------------------------------


class Declined(Exception):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason, code)
        self.reason = reason
        self.code = code


def charge(amount: int) -> str:
    TALLY.hit("charge")
    raise Declined(f"card declined for {amount}", 51)


class Checkout(DurableActor):
    @handler
    def go(self, ctx: Context, msg: Item) -> str:
        try:
            ctx.step(charge, msg.n, retry=RetryPolicy(max_attempts=2, initial_interval=0.01))
        except Declined as exc:
            TALLY.log("declined", (type(exc), exc.args, exc.reason, exc.code))
        ctx.sleep(0.1)
        return "declined"


def test_a_failed_step_is_kept_and_raises_the_same_error_on_replay_without_running(
    rt: Runtime, dsn: str
) -> None:
    reply = rt.spawn(Checkout, id="checkout").ask(Item(12))
    assert reply.get(timeout=5) == "declined"
    assert TALLY.counts["charge"] == 2, "two attempts, then the failure is final"
    first, replayed = TALLY.logs["declined"]
    assert first == replayed == (Declined, ("card declined for 12", 51), "card declined for 12", 51)
    state, error = one(dsn, "SELECT state, value FROM promises WHERE id = %s", f"{reply.id}/1")
    assert state == "rejected"
    assert error["type"] == f"{__name__}.Declined"
    assert error["args"] == ["card declined for 12", 51]
    assert len(sql(dsn, "SELECT 1 FROM promises WHERE id LIKE %s", f"{reply.id}/%")) == 2
