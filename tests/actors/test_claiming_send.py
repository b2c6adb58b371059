"""A send that claims its recipient (issue 17): a message to an actor this node holds with no
activation (passivated) also claims the actor, a new epoch, in the send's own statement, so
waking it costs no commit of its own. A kill just after such a send, or a connection cut
inside its COMMIT, loses nothing and runs no kept step twice; concurrent sends to a
passivated actor start one activation, which handles each message once, in order; and a send
claims only an actor its node holds (never another node's, nor one no node holds).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pykka
import pytest

from promissory import Context, DurableActor, Runtime, handler
from promissory.store import Store
from promissory.store._handling import send_op
from promissory.testing import CrashTest, kept_steps
from tests.actors.kit import clean_run
from tests.kit import eventually

SCENARIO = "tests.actors.scenarios:passivating"


@pytest.fixture(scope="module")
def clean(server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The outcome of a run without crashes, for every crash test to compare with."""
    return clean_run(server_dsn, SCENARIO, tmp_path_factory.mktemp("clean"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "fault", ["crash_at=message.committed:2", "crash_at=message.committed:5", "drop_at=send:3"]
)
def test_a_fault_at_a_claiming_send_loses_nothing_and_runs_no_kept_step_twice(
    dsn: str, tmp_path: Path, clean: dict[str, Any], fault: str
) -> None:
    test = CrashTest(dsn, SCENARIO, workdir=tmp_path)
    name, value = fault.split("=")
    first = test.run(**{name: value})
    if name == "crash_at":
        assert first.killed, f"the run never reached {value}"
        kept = kept_steps(dsn)
        before = test.effects()
        final = test.run()
        assert not final.killed
        again = {key for (_, key) in test.effects() - before} & kept
        assert not again, f"kept steps ran again: {sorted(again)}"
    else:
        final = first  # the process lives on, finds out, and goes on
        assert not final.killed
        assert final.dropped is not None and final.dropped.startswith("send #3"), final.stderr
    assert final.outcome == clean["outcome"]
    assert set(test.effects()) == clean["effects"]


class Note(msgspec.Struct, frozen=True):
    sender: int
    n: int


class Read(msgspec.Struct, frozen=True):
    pass


class Notebook(DurableActor[dict[str, list[int]]], name="tests.claiming.Notebook"):
    def initial_state(self) -> dict[str, list[int]]:
        return {}

    @handler
    def note(self, ctx: Context, msg: Note) -> None:
        self.state.setdefault(str(msg.sender), []).append(msg.n)

    @handler
    def read(self, ctx: Context, msg: Read) -> dict[str, list[int]]:
        return self.state


@pytest.mark.timeout(120)
def test_concurrent_sends_to_a_passivated_actor_are_each_handled_once_in_order(
    dsn: str,
) -> None:
    with Runtime(dsn, idle_timeout=0.02) as rt:
        ref = rt.spawn(Notebook, id="notebook")
        ref.ask(Read()).get(timeout=10)
        senders, rounds, each = 6, 5, 4
        for r in range(rounds):
            deadline = time.monotonic() + 5
            while rt.host.live_activations() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert rt.host.live_activations() == 0, "the actor did not passivate"

            def send(sender: int, r: int = r) -> None:
                for i in range(each):
                    ref.tell(Note(sender, r * each + i))

            threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        notes = ref.ask(Read()).get(timeout=30)
    assert notes == {str(s): list(range(rounds * each)) for s in range(senders)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        pending = conn.execute(
            "SELECT count(*) FROM promises WHERE recipient = 'notebook' AND state = 'pending'"
        ).fetchone()
    assert pending == (0,)


def test_a_send_claims_only_an_actor_the_claiming_node_holds(dsn: str) -> None:
    store = Store(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO actors (id, kind, spec, node, epoch) VALUES "
                "('held', 'k', '{}', 'node-a', 3), ('free', 'k', '{}', NULL, 3)"
            )

        def send(recipient: str, n: int, claim: str) -> Any:
            op = send_op(f"{recipient}/m{n}", recipient, param="{}", tags="{}", claim=claim)
            return store.execute(op)

        other = send("held", 1, "node-b")
        assert other.applied and other.claimed is None  # another node's: sent, not claimed
        mine = send("held", 2, "node-a")
        assert mine.applied and mine.claimed is not None
        assert (mine.claimed.epoch, mine.claimed.node, mine.epoch) == (4, "node-a", 3)
        assert mine.earlier == (other.promise.seq,)
        again = send("held", 2, "node-a")  # the same message again: no second claim
        assert not again.applied and again.claimed is None
        free = send("free", 1, "node-b")  # held by none: the fleet's placement decides
        assert free.applied and free.claimed is None
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT id, epoch, node FROM actors ORDER BY id").fetchall()
        assert rows == [("free", 3, None), ("held", 4, "node-a")]
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_lost_commit_answer_of_spawn_ask_is_read_back_and_the_actor_runs_once(
    dsn: str, tmp_path: Path
) -> None:
    """The writer's connection is cut inside the COMMIT of spawn_ask's one statement: it asks
    the database, reads the message and actor back, and the new actor runs the message (once)."""
    import os
    import subprocess
    import sys

    child = f"""
import msgspec
import pykka
from promissory import Context, DurableActor, Runtime, handler
from promissory.testing import effect

class Hello(msgspec.Struct):
    name: str

class Greeter(DurableActor[None], name="tests.claiming.Greeter"):
    @handler
    def hello(self, ctx: Context, msg: Hello) -> str:
        return ctx.step(greet, msg.name)

def greet(name: str) -> str:
    effect("greet", name)
    return "hello " + name

with Runtime({dsn!r}) as rt:
    reply = rt.spawn_ask(Greeter, Hello("ann"), id="greeter", message_id="greeter/1")
    print("WRITTEN", reply.written, flush=True)
    print("REPLY", reply.get(timeout=30), flush=True)
"""
    effects = tmp_path / "effects.log"
    env = {
        **os.environ,
        "PROMISSORY_DROP_AT": "spawn:1",
        "PROMISSORY_EFFECTS": str(effects),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert "promissory connection drop spawn #1" in done.stderr, done.stderr
    assert "WRITTEN True" in done.stdout, done.stdout + done.stderr
    assert "REPLY hello ann" in done.stdout, done.stdout + done.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT epoch FROM actors").fetchall()
    assert rows == [(1,)]  # born claimed, and claimed by no one since
    ran = [line for line in effects.read_text().splitlines() if line.startswith("effect\tgreet")]
    assert len(ran) == 1, effects.read_text()


STARTS: list[int] = []
"""The thread of each activation of ``Warmed`` as it started (``on_start``)."""
HANDLED: list[int] = []
"""The thread each of its messages was handled on."""


class Warmed(DurableActor[None], name="tests.claiming.Warmed"):
    def on_start(self) -> None:
        STARTS.append(threading.get_ident())

    @handler
    def note(self, ctx: Context, msg: Note) -> int:
        HANDLED.append(threading.get_ident())
        return msg.n


def _passivated(rt: Runtime) -> None:
    deadline = time.monotonic() + 5
    while rt.host.live_activations() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert rt.host.live_activations() == 0, "the actor did not passivate"


@pytest.mark.timeout(60)
def test_a_claiming_send_starts_its_activation_while_it_commits(dsn: str) -> None:
    # The send is held at the database (another transaction locks the actor's row): its
    # activation's thread is started meanwhile, and it is the one that handles the message.
    STARTS.clear()
    HANDLED.clear()
    with Runtime(dsn, idle_timeout=0.05) as rt:
        ref = rt.spawn(Warmed, id="warmed")
        assert ref.ask(Note(0, 0)).get(timeout=10) == 0
        _passivated(rt)
        STARTS.clear()
        HANDLED.clear()
        with psycopg.connect(dsn) as blocker:
            blocker.execute("SELECT 1 FROM actors WHERE id = 'warmed' FOR UPDATE")
            sender = threading.Thread(target=ref.tell, args=(Note(0, 1),))
            sender.start()
            deadline = time.monotonic() + 10
            while not STARTS and time.monotonic() < deadline:
                time.sleep(0.005)
            assert STARTS, "no activation started while the send was held"
            assert sender.is_alive() and not HANDLED, "the send went through the lock"
            blocker.rollback()
        sender.join(10)
        deadline = time.monotonic() + 10
        while not HANDLED and time.monotonic() < deadline:
            time.sleep(0.005)
        assert HANDLED == STARTS, "the activation started ahead did not handle the message"


@pytest.mark.timeout(120)
def test_an_activation_started_for_a_claim_that_did_not_hold_is_stopped(dsn: str) -> None:
    # Another transaction holds the actor's row while the sends go out, so none of them
    # claims (the claim skips a locked row): each activation started ahead of its claim is
    # stopped, and the one that runs the messages claims the actor itself, once the row is
    # free. Nothing is left running, and each message is handled once.
    HANDLED.clear()
    with Runtime(dsn, idle_timeout=0.05) as rt:
        ref = rt.spawn(Warmed, id="unclaimed")
        ref.ask(Note(0, -1)).get(timeout=10)
        for n in range(5):
            _passivated(rt)
            HANDLED.clear()
            with psycopg.connect(dsn) as blocker:
                blocker.execute("SELECT 1 FROM actors WHERE id = 'unclaimed' FOR NO KEY UPDATE")
                ref.tell(Note(0, n))  # written, not claimed: the row is locked
                time.sleep(0.05)
                assert not HANDLED
                blocker.rollback()
            deadline = time.monotonic() + 10
            while not HANDLED and time.monotonic() < deadline:
                time.sleep(0.005)
            assert len(HANDLED) == 1
        _passivated(rt)
        deadline = time.monotonic() + 5
        while pykka.ActorRegistry.get_by_class(Warmed) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pykka.ActorRegistry.get_by_class(Warmed), "an activation was left running"


BUILT: list[int] = []
"""Each ``SlowBuilt`` activation built (``__init__``), by ``id``."""
ENDED: list[int] = []
"""Each one that ended (``on_stop``), by ``id``."""


class SlowBuilt(DurableActor[None], name="tests.claiming.SlowBuilt"):
    def __init__(self) -> None:
        super().__init__()
        time.sleep(0.2)  # still being built, ahead of its claim, when the send returns
        BUILT.append(id(self))

    def on_stop(self) -> None:
        ENDED.append(id(self))

    @handler
    def note(self, ctx: Context, msg: Note) -> int:
        return msg.n


@pytest.mark.timeout(60)
def test_an_activation_still_being_built_for_its_claim_is_waited_for_not_built_twice(
    dsn: str,
) -> None:
    # A claiming send that returns while its activation is being built (a slow __init__)
    # uses that one: the actor is built, started and stopped once per activation, not once
    # more for a spare nobody uses.
    with Runtime(dsn, idle_timeout=0.05) as rt:
        ref = rt.spawn(SlowBuilt, id="slow-built")
        assert ref.ask(Note(0, 0)).get(timeout=10) == 0
        _passivated(rt)
        # Its on_stop runs on its own thread, after it stopped counting as live.
        eventually(lambda: len(ENDED) == len(BUILT), timeout=5, what="the first one ended")
        BUILT.clear()
        ENDED.clear()
        assert ref.ask(Note(0, 1)).get(timeout=10) == 1
        _passivated(rt)
        eventually(lambda: ENDED, timeout=5, what="the activation ended")
        time.sleep(0.3)  # a spare, had one been built, would have ended by now too
        assert len(BUILT) == 1, BUILT
        assert ENDED == BUILT
