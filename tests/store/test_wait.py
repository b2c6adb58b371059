"""Waiting for a promise: woken by a settle in this process or another, never by polling."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from promissory.errors import PromiseNotFoundError
from promissory.store import Promise, PromiseState, Store

RunPython = Callable[..., subprocess.CompletedProcess[str]]
WAIT_LIMIT = 30.0


def wait_in_thread(store: Store, id: str) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``store.wait(id)`` on a thread; return it with where its result will be put."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["promise"] = store.wait(id, timeout=WAIT_LIMIT)
        except BaseException as exc:
            result["error"] = exc
        result["woke_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def until_waiting(store: Store, id: str) -> None:
    """Return once someone in this process has subscribed to the settling of ``id``.

    The waiter subscribes before it reads the promise, so from here on a settle can only
    reach it as an event: the tests below then show the event path, not a lucky first read.
    """
    deadline = time.monotonic() + 10
    pause = threading.Event()
    while ("settled", id) not in store.events._subs:
        assert time.monotonic() < deadline, f"nobody started waiting for {id}"
        pause.wait(0.002)


def joined(thread: threading.Thread, result: dict[str, Any]) -> Promise:
    thread.join(WAIT_LIMIT + 5)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    promise: Promise = result["promise"]
    return promise


@pytest.mark.timeout(60)
def test_wait_wakes_when_another_thread_settles(store: Store) -> None:
    store.create("w/thread")
    thread, result = wait_in_thread(store, "w/thread")
    until_waiting(store, "w/thread")

    settled_at = time.monotonic()
    store.resolve("w/thread", {"by": "thread"})

    p = joined(thread, result)
    assert p.state is PromiseState.RESOLVED
    assert p.value_as(dict) == {"by": "thread"}
    assert result["woke_at"] - settled_at < 5


@pytest.mark.timeout(60)
def test_wait_wakes_when_another_process_settles(
    store: Store, dsn: str, run_python: RunPython
) -> None:
    store.create("w/process")
    thread, result = wait_in_thread(store, "w/process")
    until_waiting(store, "w/process")

    child = run_python(
        "import sys\n"
        "from promissory.store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    print(s.reject('w/process', 'from the child').applied)\n",
        dsn,
    )
    settled_at = time.monotonic()

    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "True"
    p = joined(thread, result)
    assert p.state is PromiseState.REJECTED
    error = p.error()
    assert error is not None and error.message == "from the child"
    assert result["woke_at"] - settled_at < 5


@pytest.mark.timeout(60)
def test_wait_returns_at_once_for_a_settled_promise(store: Store) -> None:
    store.create("w/done")
    store.cancel("w/done")

    start = time.monotonic()
    p = store.wait("w/done", timeout=WAIT_LIMIT)

    assert p.state is PromiseState.REJECTED_CANCELED
    assert time.monotonic() - start < 2


@pytest.mark.timeout(30)
def test_wait_raises_timeout_error_when_nothing_happens(store: Store) -> None:
    store.create("w/quiet", timeout=3600)

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="still pending after 0.3 s"):
        store.wait("w/quiet", timeout=0.3)

    assert 0.25 < time.monotonic() - start < 5
    assert store.get("w/quiet").state is PromiseState.PENDING
    assert ("settled", "w/quiet") not in store.events._subs  # the waiter unsubscribed


@pytest.mark.timeout(30)
def test_wait_for_an_unknown_id_raises_promise_not_found(store: Store) -> None:
    with pytest.raises(PromiseNotFoundError):
        store.wait("w/ghost", timeout=5)


@pytest.mark.timeout(30)
def test_settled_subscribers_are_called_before_the_settling_call_returns(store: Store) -> None:
    calls: list[tuple[str, str, bool]] = []
    every: list[str] = []
    store.subscribe("settled", ["s/1"], lambda *a: calls.append(a))
    store.subscribe("settled", [""], lambda kind, key, resync: every.append(key))
    store.create("s/1")
    store.create("s/2")

    store.resolve("s/1", 1)
    store.reject("s/2", "no")

    assert ("settled", "s/1", False) in calls
    assert all(key == "s/1" for _, key, _ in calls)
    assert {"s/1", "s/2"} <= set(every)


@pytest.mark.timeout(30)
def test_a_canceled_subscription_is_not_called(store: Store) -> None:
    calls: list[str] = []
    sub = store.subscribe("settled", ["s/x"], lambda kind, key, resync: calls.append(key))
    store.create("s/x")

    sub.cancel()
    sub.cancel()  # idempotent
    store.resolve("s/x")

    assert calls == []


@pytest.mark.timeout(30)
def test_a_failing_callback_does_not_stop_the_others_or_the_write(store: Store) -> None:
    got: list[str] = []

    def broken(kind: str, key: str, resync: bool) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe("settled", ["s/b"], broken)
    store.subscribe("settled", ["s/b"], lambda kind, key, resync: got.append(key))
    store.create("s/b")

    assert store.resolve("s/b").applied
    assert "s/b" in got


@pytest.mark.timeout(60)
def test_settled_subscribers_hear_of_settles_made_by_another_process(
    store: Store, dsn: str, run_python: RunPython
) -> None:
    heard = threading.Event()
    store.subscribe("settled", ["s/remote"], lambda kind, key, resync: heard.set())
    store.create("s/remote")

    child = run_python(
        "import sys\n"
        "from promissory.store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    s.resolve('s/remote', 1)\n",
        dsn,
    )

    assert child.returncode == 0, child.stderr
    assert heard.wait(10)


@pytest.mark.timeout(60)
def test_timer_subscribers_hear_of_new_timeouts(store: Store) -> None:
    heard = threading.Event()
    store.subscribe("timer", [""], lambda kind, key, resync: heard.set())

    store.create("no-timeout")
    store.create("with-timeout", timeout=3600)

    assert heard.wait(10)


@pytest.mark.timeout(60)
def test_many_waiters_on_one_promise_all_wake(store: Store) -> None:
    store.create("w/many")
    waiters = [wait_in_thread(store, "w/many") for _ in range(16)]
    until_waiting(store, "w/many")

    store.resolve("w/many", "all")

    for thread, result in waiters:
        assert joined(thread, result).value_as(str) == "all"


def test_a_wait_dropped_inside_the_hubs_own_lock_does_not_deadlock(store: Store) -> None:
    # A dropped Reply cancels its Expectation from a finalizer, in whichever thread a garbage
    # collection happens: that can be inside one of the hub's own locked sections (a GC while
    # it gathers the callbacks of a publish). The removal must not wait for that lock.
    from promissory.store import EventKind

    hub = store.events
    woken: list[str] = []
    expectation = hub.expect("dropped/1")
    sub = hub.subscribe(EventKind.SETTLED, ["dropped/1"], lambda k, key, r: woken.append(key))

    def finalizer_inside_the_lock() -> None:
        with hub._lock:
            expectation.cancel()
            sub.cancel()

    thread = threading.Thread(target=finalizer_inside_the_lock, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the removal waited for a lock its own thread holds"
    # Left to the lock's next holder: the next publish calls neither.
    hub.publish([(EventKind.SETTLED, "dropped/1")])
    assert woken == []
    assert not expectation.woken.is_set()
    assert ("dropped/1") not in hub._expected


def test_a_settle_lets_go_of_its_expectations_and_a_late_cancel_costs_no_lock(
    store: Store,
) -> None:
    # A settle is final: the hub lets go of what expected it when the settle is published,
    # with or without the record (heard from another process). A Reply dropped after its
    # reply came then cancels nothing, not even with the hub's lock held elsewhere.
    from promissory.store import EventKind

    hub = store.events
    mine = hub.expect("gone/1")
    theirs = hub.expect("gone/2")
    record = object()
    hub.publish([(EventKind.SETTLED, "gone/1", record), (EventKind.SETTLED, "gone/2")])
    assert mine.woken.is_set() and mine.promise is record
    assert theirs.woken.is_set() and theirs.promise is None
    assert "gone/1" not in hub._expected and "gone/2" not in hub._expected
    with hub._lock:
        started = time.monotonic()
        mine.cancel()
        theirs.cancel()
        assert time.monotonic() - started < 0.04  # the lock is never asked for
    assert not hub._later


def test_a_resync_wakes_an_expectation_and_keeps_it_for_its_settle(store: Store) -> None:
    from promissory.store import EventKind

    hub = store.events
    expectation = hub.expect("kept/1")
    hub.resync()
    assert expectation.woken.is_set() and expectation.promise is None
    expectation.woken.clear()  # the waiter read the promise, still pending, and waits again
    record = object()
    hub.publish([(EventKind.SETTLED, "kept/1", record)])
    assert expectation.woken.is_set() and expectation.promise is record
    expectation.cancel()
    assert "kept/1" not in hub._expected
