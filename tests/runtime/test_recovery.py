"""Recovery: work left by a runtime that closed is picked up by the next one, exactly once."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from promissory.actors import (
    ActorRef,
    Context,
    DurableActor,
    Reply,
    RetryPolicy,
    current_step,
    handler,
)
from promissory.runtime import Runtime, _fleet
from promissory.runtime._fleet import Fleet
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
from tests.kit import time_passes


def test_a_timer_that_came_due_while_no_runtime_ran_fires_right_after_the_next_start(
    dsn: str,
) -> None:
    TALLY.clear()
    # A nap far longer than a loaded machine can take to see it suspended and close the
    # runtime: it must not fire while this runtime runs. The fake clock makes it come due.
    with Runtime(dsn, suspend_after=0.02) as rt:
        reply = rt.spawn(Sleeper, id="sleeper").ask(Nap(60.0), id="sleeper/nap")
        eventually(lambda: rt.host.suspended_count() == 1, what="the nap suspended")
        assert one(dsn, "SELECT awaiting FROM promises WHERE id = %s", reply.id) == [
            "sleeper/nap/1"
        ]
    time_passes(dsn, 60.0)  # nothing runs while the timer comes due
    assert one(dsn, "SELECT state FROM promises WHERE id = 'sleeper/nap'") == "pending"
    with Runtime(dsn) as rt:
        started = time.monotonic()
        # Its timer is due: the recovery pass runs it at once rather than suspend it again.
        assert rt.recovery is not None
        assert (rt.recovery.suspended, rt.recovery.activated) == (0, 1)
        assert rt.store is not None
        assert Reply("sleeper/nap", rt.store).get(timeout=10) == "woke sleeper/nap"
        # Only guards against waiting on the timer service; slack for a loaded machine.
        assert time.monotonic() - started < 3
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


class GateWaiter(DurableActor[None], name="tests.runtime.GateWaiter"):
    """Waits on a gate promise; counts how often it runs past it."""

    passed: dict[str, int] = {}

    @handler
    def wait(self, ctx: Context, gate: str) -> str:
        ctx.promise(id=gate).result()
        GateWaiter.passed[ctx.actor_id] = GateWaiter.passed.get(ctx.actor_id, 0) + 1
        return "through"


def test_a_recovery_takes_many_actors_up_with_one_claim_and_read_not_one_per_actor(
    dsn: str,
) -> None:
    n = 40
    GateWaiter.passed.clear()
    with Runtime(dsn) as first:
        replies = [first.spawn(GateWaiter, id=f"g/{i}").ask("g/gate") for i in range(n)]

        def suspended() -> bool:
            assert first.store is not None
            row = first.store.read(
                lambda c: c.execute(
                    "SELECT count(*) FROM promises WHERE awaiting IS NOT NULL AND state = 'pending'"
                ).fetchone()
            )
            return row is not None and row[0] == n

        deadline = time.monotonic() + 30
        while not suspended():
            assert time.monotonic() < deadline, "the actors did not all wait on the gate"
            time.sleep(0.02)
    with Store(dsn) as store:
        store.resolve("g/gate", True)
    with Runtime(dsn) as second:  # its recovery pass finds all of them with work
        assert second.store is not None
        deadline = time.monotonic() + 30
        while second.host.live_activations() or len(GateWaiter.passed) < n:
            assert time.monotonic() < deadline, "the actors did not all run again"
            time.sleep(0.01)
        reads = second.store.reads
        batches = second.store.writer_stats[0]
        again = [Reply(r.id, second.store) for r in replies]
        assert [r.get(timeout=30) for r in again] == ["through"] * n
    assert GateWaiter.passed == {f"g/{i}": 1 for i in range(n)}
    # One by one, each activation read its mailbox, its wait and its journal (3 per actor)
    # and claimed in a write of its own; taken up together, a few reads in all.
    assert reads < n, reads
    assert batches <= n + 10, batches


TAKE_UP_CHILD = """
import sys
from promissory.runtime import Runtime
from tests.runtime.test_recovery import GateWaiter
with Runtime(sys.argv[1]) as rt:
    import time
    deadline = time.monotonic() + 30
    while len(GateWaiter.passed) < int(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.02)
print("PASSED", len(GateWaiter.passed), flush=True)
"""


@pytest.mark.parametrize(
    "fault", ["PROMISSORY_CRASH_AT=actors.taken_up:1", "PROMISSORY_DROP_AT=claim:1"]
)
def test_a_take_up_killed_after_its_commit_or_cut_inside_it_runs_each_actor_once(
    dsn: str, fault: str
) -> None:
    n = 30
    with Runtime(dsn) as first:
        replies = [first.spawn(GateWaiter, id=f"k/{i}").ask("k/gate") for i in range(n)]
        assert first.store is not None
        deadline = time.monotonic() + 30
        while first.store.read(
            lambda c: c.execute(
                "SELECT count(*) FROM promises WHERE awaiting IS NOT NULL AND state = 'pending'"
            ).fetchone()
        ) != (n,):
            assert time.monotonic() < deadline, "the actors did not all wait on the gate"
            time.sleep(0.02)
    with Store(dsn) as store:
        store.resolve("k/gate", True)
    name, _, value = fault.partition("=")
    env = {**os.environ, name: value, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", TAKE_UP_CHILD, dsn, str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    if name == "PROMISSORY_CRASH_AT":
        assert child.returncode == -9, child.stderr  # killed right after the claim's commit
        assert "promissory crash point actors.taken_up #1" in child.stderr
    else:
        assert child.returncode == 0, child.stderr  # the writer found out what happened
        assert f"PASSED {n}" in child.stdout, child.stdout + child.stderr
    GateWaiter.passed.clear()
    with Runtime(dsn) as again:  # whatever the child left, the next node finishes
        assert again.store is not None
        answers = [Reply(r.id, again.store).get(timeout=30) for r in replies]
    assert answers == ["through"] * n
    with Store(dsn) as store:
        settled = store.read(
            lambda c: c.execute(
                "SELECT count(*) FROM promises WHERE kind = 'message' AND recipient LIKE 'k/%%' "
                "AND state = 'resolved'"
            ).fetchone()
        )
    assert settled == (n,)


class Idler(DurableActor[None], name="tests.runtime.Idler"):
    @handler
    def ping(self, ctx: Context, msg: str) -> str:
        return msg


def idle_actor(dsn: str) -> None:
    """``idler``, spawned and idle, by a node that is closed again."""
    with Runtime(dsn) as first:
        assert first.spawn(Idler, id="idler").ask("hi").get(timeout=30) == "hi"


@contextlib.contextmanager
def take_up_held(dsn: str, rt: Runtime) -> Iterator[psycopg.Connection[Any]]:
    """The actor ``idler`` (see ``idle_actor``) as its last handler stopped it (what a
    process killed after ``ctx.stop()`` was kept leaves behind), and a take-up of it on
    ``rt``'s workers, held at the database by a row lock until the connection yielded commits.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        stopping = msgspec.json.encode({"stopping": "normal"}).decode()
        conn.execute("UPDATE actors SET reason = %s WHERE id = 'idler'", (stopping,))
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM actors WHERE id = 'idler' FOR UPDATE")
        rt.host.submit(rt.host.take_up, ["idler"])
        eventually(
            lambda: one(
                dsn,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%%UPDATE actors%%'",
            ),
            what="the take-up waiting on the row lock",
        )
        yield holder


def test_a_node_closed_while_a_take_up_is_under_way_starts_what_it_claimed_first(
    dsn: str,
) -> None:
    # Seen in CI: a dead node's actor, whose last handler had stopped it, was claimed by the
    # recovery pass a notice of the adoption ran on the host's workers while the node closed;
    # the take-up found the node closing and started nothing, leaving it running (and
    # claimed) until the next start. Here that take-up is held at the database by a row lock
    # until the close has begun.
    idle_actor(dsn)
    with Runtime(dsn) as rt:  # nothing to do here yet: the actor is live with no work
        with take_up_held(dsn, rt) as holder:
            closing = threading.Thread(target=rt.close)
            closing.start()
            time.sleep(0.3)  # the close has begun
            holder.commit()
        closing.join(30)
        assert not closing.is_alive()
    # The take-up's activation was started, handled the stop, and then the node closed.
    status, reason = one(dsn, "SELECT status, reason FROM actors WHERE id = 'idler'")
    assert (status, reason) == ("stopped", {"exit": "normal", "error": None})


IDLER_CHILD = """
import sys, time
from promissory.runtime import Runtime
from tests.runtime.test_recovery import Idler
rt = Runtime(sys.argv[1]).open()
rt.spawn(Idler, id="idler").ask("hi").get(timeout=30)
print("READY", flush=True)
time.sleep(60)
"""


def test_a_node_that_adopts_a_dead_node_takes_its_actors_up_in_one_pass(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The adoption's notice reaches every node, the adopter too: its own look has taken the
    # actors up already, and a second pass (reads, and a take-up racing the first) is waste.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-c", IDLER_CHILD, dsn], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    finally:
        child.kill()
        child.wait(30)
    caplog.set_level("INFO", logger="promissory.runtime")
    with Runtime(dsn) as rt:
        assert rt.recovery is not None and len(rt.recovery.adopted_nodes) == 1
        assert rt.ref("idler").ask("again").get(timeout=30) == "again"
        time.sleep(0.5)  # the adoption's notice has come back
        passes = [r for r in caplog.records if r.getMessage().startswith("recovery: ")]
    assert len(passes) == 1, [r.getMessage() for r in passes]


def test_a_take_up_that_ends_after_the_close_gave_up_on_it_starts_nothing(dsn: str) -> None:
    # The close waits for a take-up under way only so long (half its timeout); one that ends
    # later leaves what it claimed to the next start, rather than start activations nobody
    # will stop.
    idle_actor(dsn)
    rt = Runtime(dsn).open()
    with take_up_held(dsn, rt) as holder:
        closing = threading.Thread(target=rt.close, kwargs={"timeout": 0.4})
        closing.start()
        time.sleep(0.6)  # the close gave up waiting for the take-up
        assert closing.is_alive()  # it waits for the host's workers, the take-up among them
        holder.commit()
    closing.join(30)
    assert not closing.is_alive()
    assert rt.host.live_ids() == []
    assert one(dsn, "SELECT status FROM actors WHERE id = 'idler'") == "running"
    with Runtime(dsn):  # the next start ends it
        pass
    assert one(dsn, "SELECT status FROM actors WHERE id = 'idler'") == "stopped"


def test_a_node_whose_adoption_of_a_dead_node_failed_takes_part_when_another_adopts_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The adopter's own look takes a dead node's actors up, so the notice of that adoption
    # starts no pass there (``heard_adoption``). A node whose attempt failed (the database
    # went away mid-adoption) adopted nothing: another node's notice must start its pass.
    store.read(lambda conn: conn.execute("INSERT INTO nodes (id, lock_key) VALUES ('ghost', 4242)"))
    passes: list[list[str]] = []
    fleet = Fleet(store, lambda: "me", list, take_up=passes.append, publish=lambda kinds: None)

    def cut_off(*args: Any) -> None:
        raise psycopg.OperationalError("the connection was cut")

    monkeypatch.setattr(_fleet, "adopt_node", cut_off)
    with pytest.raises(psycopg.OperationalError):
        fleet.tick()
    assert not fleet.heard_adoption("ghost")  # another's notice: a pass here
    monkeypatch.undo()
    assert fleet.tick() == ["ghost"]
    assert passes == [["ghost"]]
    assert fleet.heard_adoption("ghost")  # its own notice: no second pass
