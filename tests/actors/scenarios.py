"""Scenarios the crash tests run in child processes (each resumes when run again).

``multi_step``: two workers handle jobs of several steps each, and a coordinator fans a batch
out to both, gathers the replies, sleeps durably, and adds them up. Every step's function
records an effect, so the test can count how often each ran across crashes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from promissory.actors import Context, DurableActor, current_step, handler
from promissory.runtime import Runtime
from promissory.testing import effect


class Ledger(msgspec.Struct):
    # Kept sorted: messages from different senders may be handled in either order.
    total: int = 0
    handled: list[str] = []


class Job(msgspec.Struct):
    steps: int
    weight: int


class Batch(msgspec.Struct):
    jobs: int


def work(key: str, i: int, weight: int) -> int:
    # The effect is keyed by the step id, so a test can tell whether a kept step ran again.
    step = current_step()
    assert step is not None
    effect("work", step.id)
    return i * weight


class Worker(DurableActor[Ledger]):
    @handler
    def job(self, ctx: Context, msg: Job) -> int:
        total = 0
        for i in range(msg.steps):
            total += ctx.step(work, f"{ctx.message_id}/{i}", i, msg.weight)
        self.state = Ledger(self.state.total + total, sorted([*self.state.handled, ctx.message_id]))
        return total


class Coordinator(DurableActor[Ledger]):
    @handler
    def batch(self, ctx: Context, msg: Batch) -> int:
        calls = [
            ctx.start_call(f"workers/{k % 2}", Job(steps=3, weight=k + 1)) for k in range(msg.jobs)
        ]
        results = ctx.gather(*calls, returns=int)
        ctx.sleep(0.05)
        total = sum(results) + ctx.step(work, f"{ctx.message_id}/sum", 1, 1)
        self.state = Ledger(self.state.total + total, sorted([*self.state.handled, ctx.message_id]))
        return total


def multi_step(rt: Runtime) -> dict[str, Any]:
    workers = [rt.spawn(Worker, id=f"workers/{k}") for k in range(2)]
    coordinator = rt.spawn(Coordinator, id="coordinator")
    replies = []
    for k in range(6):
        replies.append(workers[k % 2].ask(Job(steps=5, weight=k + 1), id=f"jobs/{k}"))
    replies.append(coordinator.ask(Batch(jobs=4), id="batches/0"))
    replies.append(coordinator.ask(Batch(jobs=2), id="batches/1"))
    values = {r.id: r.get(timeout=60) for r in replies}
    states = {}
    assert rt.store is not None
    rows = rt.store.read(
        lambda conn: conn.execute("SELECT id, state FROM actors ORDER BY id").fetchall()
    )
    for actor_id, state in rows:
        states[actor_id] = msgspec.json.decode(state) if state is not None else None
    return {"replies": values, "states": states}


class Flaky(Exception):
    """A failure the retry policy retries."""


def flaky_call() -> str:
    """Fails its first two attempts (counted across processes by the step's attempt)."""
    step = current_step()
    assert step is not None
    effect("attempt", f"{step.id}#{step.attempt}")
    effect("attempt-at", f"{step.attempt}@{time.time()}")
    if step.attempt <= 2:
        raise Flaky(f"attempt {step.attempt} failed")
    return f"ok at attempt {step.attempt}"


BACKOFF = 0.6
"""Seconds before the second attempt; the third waits twice that."""


class Caller(DurableActor[None]):
    @handler
    def call(self, ctx: Context, msg: Batch) -> str:
        from promissory.actors import RetryPolicy

        policy = RetryPolicy(max_attempts=5, initial_interval=BACKOFF, multiplier=2, jitter=0)
        result: str = ctx.step(flaky_call, retry=policy)
        return result


def retrying(rt: Runtime) -> dict[str, Any]:
    """One step that fails twice and then succeeds, retried with a backoff (see
    ``test_crash.test_a_backoff_survives_a_sigkill``)."""
    caller = rt.spawn(Caller, id="caller")
    return {"reply": caller.ask(Batch(jobs=0), id="calls/0").get(timeout=30)}


def passivating(rt: Runtime) -> dict[str, Any]:
    """Jobs asked of workers one at a time, each after its worker has passivated: every
    send claims its passivated recipient in the send's own statement (issue 17)."""
    rt.host.idle_timeout = 0.01
    workers = [rt.spawn(Worker, id=f"workers/{k}") for k in range(2)]
    values = {}
    for k in range(6):
        deadline = time.monotonic() + 5
        while rt.host.live_activations() and time.monotonic() < deadline:
            time.sleep(0.005)
        reply = workers[k % 2].ask(Job(steps=2, weight=k + 1), id=f"jobs/{k}")
        values[reply.id] = reply.get(timeout=60)
    assert rt.store is not None
    rows = rt.store.read(
        lambda conn: conn.execute("SELECT id, state FROM actors ORDER BY id").fetchall()
    )
    states = {a: msgspec.json.decode(s) if s is not None else None for a, s in rows}
    return {"replies": values, "states": states}


class Echo(DurableActor[None]):
    """Leaves its state as it was (``None``): its settles write the message alone, no new
    version of its row (issue 17)."""

    @handler
    def job(self, ctx: Context, msg: Job) -> int:
        return sum(ctx.step(work, f"{ctx.message_id}/{i}", i, msg.weight) for i in range(msg.steps))


def unchanged(rt: Runtime) -> dict[str, Any]:
    """Jobs asked of an actor whose state they leave as it was."""
    echo = rt.spawn(Echo, id="echo")
    return {
        "replies": {
            f"echo/{k}": echo.ask(Job(steps=2, weight=k + 1), id=f"echo/{k}").get(timeout=30)
            for k in range(3)
        }
    }
