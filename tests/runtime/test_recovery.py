"""Recovery: work left by a runtime that closed is picked up by the next one, exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from promissory.actors import (
    ActorRef,
    Context,
    DurableActor,
    Reply,
    RetryPolicy,
    current_step,
    handler,
)
from promissory.runtime import Runtime
from promissory.store import Store
from promissory.testing import read_effects
from tests.actors.kit import (
    ROOT,
    TALLY,
    Appender,
    Item,
    Nap,
    Sleeper,
    eventually,
    one,
    sql,
)


def test_a_timer_that_came_due_while_no_runtime_ran_fires_right_after_the_next_start(
    dsn: str,
) -> None:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        reply = rt.spawn(Sleeper, id="sleeper").ask(Nap(1.0), id="sleeper/nap")
        eventually(lambda: rt.host.suspended_count() == 1, what="the nap suspended")
        assert one(dsn, "SELECT awaiting FROM promises WHERE id = %s", reply.id) == [
            "sleeper/nap/1"
        ]
    # Nothing runs while the timer comes due.
    left = one(
        dsn,
        "SELECT extract(epoch FROM timeout_at - clock_timestamp()) FROM promises WHERE id = %s",
        "sleeper/nap/1",
    )
    time.sleep(max(0.0, float(left)) + 0.05)
    assert one(dsn, "SELECT state FROM promises WHERE id = 'sleeper/nap'") == "pending"
    started = time.monotonic()
    with Runtime(dsn) as rt:
        assert rt.recovery is not None and rt.recovery.suspended == 1
        assert rt.store is not None
        assert Reply("sleeper/nap", rt.store).get(timeout=5) == "woke sleeper/nap"
        assert time.monotonic() - started < 0.5
    assert TALLY.counts["woke:sleeper/nap"] == 1


def test_two_runtimes_started_at_once_on_pending_work_handle_each_message_exactly_once(
    dsn: str, tmp_path: Path
) -> None:
    actors = [f"appenders/{k}" for k in range(4)]
    with Runtime(dsn) as rt:
        for actor_id in actors:
            rt.spawn(Appender, id=actor_id)
    # Messages written with no runtime up: they wait in the mailboxes.
    with Store(dsn) as store:
        ids = [
            ActorRef(actor_id, store).tell(Item(n), id=f"{actor_id}/m{n:02}")
            for actor_id in actors
            for n in range(10)
        ]
    assert one(dsn, "SELECT count(*) FROM promises WHERE state = 'pending'") == 40
    effects = tmp_path / "effects"
    env = {**os.environ, "PROMISSORY_DSN": dsn, "PROMISSORY_EFFECTS": str(effects)}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.proc", "serve", *ids],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    nodes = {msgspec.json.decode(out.strip().splitlines()[-1])["node"] for out, _ in results}
    assert len(nodes) == 2
    counts = read_effects(effects)
    assert {key for (_, key) in counts} == {f"{id}/1" for id in ids}
    assert set(counts.values()) == {1}, "no message was handled twice"
    for actor_id in actors:
        replies = sql(
            dsn,
            "SELECT value FROM promises WHERE recipient = %s ORDER BY id",
            actor_id,
        )
        assert [r[0] for r in replies] == [list(range(n + 1)) for n in range(10)]
        assert one(dsn, "SELECT state FROM actors WHERE id = %s", actor_id) == {
            "items": list(range(10))
        }


class Backoff(msgspec.Struct):
    dsn: str


def attempt_logged(dsn: str) -> str:
    step = current_step()
    assert step is not None
    TALLY.log("attempts", step.attempt)
    if step.attempt == 1:
        raise ConnectionError("first attempt lost")
    return f"ok on attempt {step.attempt}"


class Retrier(DurableActor):
    @handler
    def backoff(self, ctx: Context, msg: Backoff) -> str:
        policy = RetryPolicy(max_attempts=3, initial_interval=0.6, jitter=0)
        result: str = ctx.step(attempt_logged, msg.dsn, retry=policy)
        return result


def test_a_retry_backoff_survives_a_restart_of_the_runtime_and_does_not_start_over(
    dsn: str,
) -> None:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        reply = rt.spawn(Retrier, id="retrier").ask(Backoff(dsn), id="retrier/b")
        eventually(lambda: rt.host.suspended_count() == 1, what="the retry waits on its timer")
    state, attempt, next_at = one(
        dsn, "SELECT state, attempt, next_attempt_at FROM promises WHERE id = 'retrier/b/1'"
    )
    assert (state, attempt) == ("pending", 1)
    with Runtime(dsn) as rt:
        assert rt.store is not None
        assert Reply(reply.id, rt.store).get(timeout=5) == "ok on attempt 2"
        finished = one(dsn, "SELECT settled_at FROM promises WHERE id = 'retrier/b/1'")
    assert TALLY.logs["attempts"] == [1, 2], "the second attempt counted on from the first"
    assert finished >= next_at, "and waited out the kept backoff"
