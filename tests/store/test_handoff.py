"""``WriteFuture`` and ``Signal``: each state they go through, and the hand-off between two
threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

import pytest

from promissory.store._handoff import Signal, WriteFuture


def test_a_result_set_in_another_thread_wakes_its_waiter() -> None:
    future: WriteFuture[int] = WriteFuture()
    assert future.set_running_or_notify_cancel()

    def complete() -> None:
        time.sleep(0.05)
        future.set_result(7)

    threading.Thread(target=complete).start()
    assert not future.done()
    assert future.result(timeout=5) == 7
    assert future.done() and not future.cancelled()
    assert future.result() == 7  # again: done futures answer at once
    assert future.exception() is None


def woken_waiters(wait: Callable[[], Any], wake: Callable[[], None], n: int = 4) -> list[Any]:
    """What ``n`` threads blocked in ``wait`` got once ``wake`` ran in this one."""
    got: list[Any] = []
    waiters = [threading.Thread(target=lambda: got.append(wait())) for _ in range(n)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    wake()
    for t in waiters:
        t.join(5)
    return got


def test_every_waiter_wakes() -> None:
    future: WriteFuture[str] = WriteFuture()

    def complete() -> None:
        future.set_running_or_notify_cancel()
        future.set_result("kept")

    assert woken_waiters(lambda: future.result(5), complete) == ["kept"] * 4


def test_an_error_is_raised_to_the_waiter() -> None:
    future: WriteFuture[int] = WriteFuture()
    future.set_running_or_notify_cancel()
    error = ValueError("bad row")
    future.set_exception(error)
    with pytest.raises(ValueError, match="bad row") as caught:
        future.result(1)
    assert caught.value is error
    assert future.exception() is error


def test_a_wait_that_runs_out_raises_timeout_error_and_leaves_the_write_pending() -> None:
    future: WriteFuture[int] = WriteFuture()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="within 0.05 s"):
        future.result(0.05)
    assert time.monotonic() - started >= 0.04
    with pytest.raises(TimeoutError):
        future.result(0)
    with pytest.raises(TimeoutError):
        future.exception(0)
    assert not future.done()
    # Still usable: the writer takes it and completes it after the caller gave up waiting.
    assert future.set_running_or_notify_cancel()
    future.set_result(1)
    assert future.result(0) == 1


def test_a_pending_write_is_withdrawn_and_the_writer_skips_it() -> None:
    future: WriteFuture[int] = WriteFuture()
    assert future.cancel()
    assert future.cancel()  # withdrawn already: still withdrawn
    assert future.done() and future.cancelled()
    assert not future.set_running_or_notify_cancel()
    with pytest.raises(CancelledError):
        future.result(1)
    with pytest.raises(CancelledError):
        future.exception(1)
    with pytest.raises(RuntimeError, match="cancelled"):
        future.set_result(1)


def test_a_waiter_blocked_on_a_write_wakes_when_it_is_withdrawn() -> None:
    future: WriteFuture[int] = WriteFuture()
    raised: list[type[BaseException]] = []

    def wait() -> None:
        try:
            future.result(5)
        except BaseException as exc:
            raised.append(type(exc))

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    assert future.cancel()
    waiter.join(5)
    assert raised == [CancelledError]


def test_a_running_write_can_no_longer_be_withdrawn() -> None:
    future: WriteFuture[int] = WriteFuture()
    assert future.set_running_or_notify_cancel()
    assert not future.cancel()
    assert not future.done()
    with pytest.raises(RuntimeError, match="running"):
        future.set_running_or_notify_cancel()
    future.set_result(2)
    assert not future.cancel()
    with pytest.raises(RuntimeError, match="finished"):
        future.set_exception(ValueError())
    assert future.result() == 2


def race_cancel_and_start() -> tuple[WriteFuture[int], dict[str, bool]]:
    """A caller withdrawing a write while the writer takes it, released together."""
    future: WriteFuture[int] = WriteFuture()
    barrier = threading.Barrier(2)
    outcome: dict[str, bool] = {}

    def withdraw() -> None:
        barrier.wait(5)
        outcome["cancelled"] = future.cancel()

    def take() -> None:
        barrier.wait(5)
        outcome["running"] = future.set_running_or_notify_cancel()

    threads = [threading.Thread(target=withdraw), threading.Thread(target=take)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    return future, outcome


def test_cancel_and_start_racing_agree_on_one_outcome() -> None:
    for _ in range(200):
        future, outcome = race_cancel_and_start()
        assert outcome["cancelled"] != outcome["running"]
        assert future.cancelled() == outcome["cancelled"]


def test_repr_names_the_state() -> None:
    future: WriteFuture[int] = WriteFuture()
    assert repr(future) == "<WriteFuture pending>"
    future.cancel()
    assert repr(future) == "<WriteFuture cancelled>"


# -- Signal -------------------------------------------------------------------------------------


def test_a_signal_set_in_another_thread_wakes_its_waiter() -> None:
    woken = Signal()
    assert not woken.is_set()

    def wake() -> None:
        time.sleep(0.05)
        woken.set()

    threading.Thread(target=wake).start()
    assert woken.wait(5)
    assert woken.is_set()
    assert woken.wait(0)  # set: every wait returns at once
    assert repr(woken) == "<Signal set>"


def test_a_wait_that_runs_out_returns_false() -> None:
    woken = Signal()
    started = time.monotonic()
    assert not woken.wait(0.05)
    assert time.monotonic() - started >= 0.04
    assert not woken.wait(0)
    assert not woken.wait(-1)  # a deadline already past: a look, no wait
    assert repr(woken) == "<Signal clear>"


def test_setting_twice_then_clearing_once_leaves_it_clear() -> None:
    woken = Signal()
    woken.set()
    woken.set()
    woken.clear()
    assert not woken.is_set()
    assert not woken.wait(0.01)
    woken.clear()  # clear already: nothing changes
    woken.set()
    assert woken.wait(0)


def test_a_waiter_that_clears_after_each_wake_sees_every_later_set() -> None:
    woken = Signal()
    seen: list[int] = []
    done = threading.Event()

    def waiter() -> None:
        while len(seen) < 50:
            if woken.wait(5):
                woken.clear()
                seen.append(1)
        done.set()

    threading.Thread(target=waiter).start()
    for _ in range(50):
        woken.set()
        deadline = time.monotonic() + 5
        while woken.is_set() and time.monotonic() < deadline:
            time.sleep(0.0005)  # the waiter took it
    assert done.wait(5)
    assert len(seen) == 50


def test_every_waiter_wakes_on_one_set() -> None:
    woken = Signal()
    assert woken_waiters(lambda: woken.wait(5), woken.set) == [True] * 4
