"""What a message costs the database: commits (the writer's batches) and reads (the read pool).

The message path's promises (issue 17): a ``tell`` or ``ask`` to an idle actor hosted here is
one commit to keep the message and one to settle it with the actor's new state, and nothing
is read on the way (the send tells the host where and at which epoch the actor lives, the
activation knows a message it was handed has no journal yet, and the settle carries the reply
to the asker). A message from a handler to a local actor is read no more than one from
outside. A passivated actor costs the same two commits: its send claims it (a new epoch) in the
same statement, and the new activation starts from that row. Counted on the store's own
counters, so other work on the database does not disturb the figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from promissory import ActorRef, Context, DurableActor, Runtime, handler
from promissory.store import EventKind, Store
from promissory.testing import CrashTest
from tests.actors.kit import clean_run
from tests.kit import count_calls, eventually


class Add(msgspec.Struct, frozen=True):
    n: int


class Counter(DurableActor[int]):
    def initial_state(self) -> int:
        return 0

    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        self.state += msg.n
        return self.state


class Relay(msgspec.Struct, frozen=True):
    n: int


class Relayer(DurableActor[None]):
    @handler
    def relay(self, ctx: Context, msg: Relay) -> int:
        ctx.send("counter", Add(msg.n))
        return msg.n


def counted(rt: Runtime) -> tuple[int, int]:
    assert rt.store is not None
    return rt.store.writer_stats[0], rt.store.reads


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    with Runtime(dsn) as runtime:
        yield runtime


def test_an_ask_to_an_idle_actor_is_two_commits_and_no_read(rt: Runtime) -> None:
    ref = rt.spawn(Counter, id="counter")
    for _ in range(3):
        ref.ask(Add(0)).get(timeout=10)  # claimed, and its state loaded, once
    commits, reads = counted(rt)

    n = 20
    for i in range(n):
        assert ref.ask(Add(1)).get(timeout=10) == i + 1

    after_commits, after_reads = counted(rt)
    assert after_commits - commits <= 2 * n
    assert after_reads - reads == 0


def test_a_state_a_message_leaves_as_it_was_is_not_written_again(dsn: str) -> None:
    # The settle writes the actor's row only when the state changed: a message that leaves
    # it as it was makes no new version of the row (less WAL, no dead tuple to vacuum).
    def version() -> tuple[str, Any]:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT xmin::text, state FROM actors WHERE id = 'counter'")
            return row.fetchone()  # type: ignore[return-value]

    with Runtime(dsn) as rt:
        ref = rt.spawn(Counter, id="counter")
        assert ref.ask(Add(2)).get(timeout=10) == 2
        ref.ask(Add(0)).get(timeout=10)  # the state as loaded is written once in our form
        before = version()
        for _ in range(5):
            assert ref.ask(Add(0)).get(timeout=10) == 2
        assert version() == before
        assert ref.ask(Add(3)).get(timeout=10) == 5
        changed = version()
        assert changed[0] != before[0] and changed[1] == 5
    with Runtime(dsn) as rt:  # a new activation starts from the state kept
        assert rt.ref("counter").ask(Add(0)).get(timeout=10) == 5
        assert rt.ref("counter").ask(Add(1)).get(timeout=10) == 6
    assert version()[1] == 6


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", ["crash_at=message.settled:2", "drop_at=complete:2"])
def test_a_fault_at_a_settle_that_leaves_the_state_loses_nothing(
    server_dsn: str, dsn: str, tmp_path: Path, fault: str
) -> None:
    # A settle that writes the message alone (the state as it was): killed right after its
    # commit, or its connection cut inside that commit, nothing is lost or run twice.
    scenario = "tests.actors.scenarios:unchanged"
    clean = clean_run(server_dsn, scenario, tmp_path / "clean")
    test = CrashTest(dsn, scenario, workdir=tmp_path / "faulty")
    name, value = fault.split("=")
    first = test.run(**{name: value})
    if name == "crash_at":
        assert first.killed, f"the run never reached {value}"
        final = test.run()
        assert not final.killed, final.stderr
    else:
        final = first  # the process lives on, finds out the commit's outcome, and goes on
        assert not final.killed, final.stderr
        assert final.dropped is not None and final.dropped.startswith("complete #2"), final.stderr
    assert final.outcome == clean["outcome"]
    assert set(test.effects()) == clean["effects"]
    assert set(test.effects().values()) == {1}


class Hold(msgspec.Struct, frozen=True):
    pass


GATE = threading.Event()


class Gated(DurableActor[int]):
    def initial_state(self) -> int:
        return 0

    @handler
    def hold(self, ctx: Context, msg: Hold) -> None:
        assert GATE.wait(10)

    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        self.state += msg.n
        return self.state


def test_a_backlog_handed_over_in_process_is_started_with_no_read(rt: Runtime) -> None:
    # Each send lists the pending messages before it (up to ``EARLIER``): an actor that
    # has seen them all starts the message with no read, however long its backlog (a
    # supervisor taking a burst of exits). 60 messages wait behind a held handler.
    GATE.clear()
    ref = rt.spawn(Gated, id="gated")
    ref.ask(Add(0)).get(timeout=10)
    held = ref.ask(Hold())
    time.sleep(0.1)
    commits, reads = counted(rt)
    for _ in range(60):
        ref.tell(Add(1))
    GATE.set()
    held.get(timeout=10)
    assert ref.ask(Add(0)).get(timeout=10) == 60
    assert counted(rt)[1] - reads == 0


def test_a_tell_is_handled_with_no_read_and_two_commits(rt: Runtime) -> None:
    ref = rt.spawn(Counter, id="counter")
    ref.ask(Add(0)).get(timeout=10)
    commits, reads = counted(rt)

    n = 20
    for _ in range(n):
        ref.tell(Add(1))
    assert ref.ask(Add(0)).get(timeout=10) == n

    after_commits, after_reads = counted(rt)
    # Tells that arrive while the actor is busy may share a commit with each other.
    assert after_commits - commits <= 2 * (n + 1)
    assert after_reads - reads == 0


def test_a_send_from_a_handler_to_a_local_actor_is_read_by_no_one(rt: Runtime) -> None:
    counter = rt.spawn(Counter, id="counter")
    relayer = rt.spawn(Relayer, id="relayer")
    counter.ask(Add(0)).get(timeout=10)
    relayer.ask(Relay(0)).get(timeout=10)
    commits, reads = counted(rt)

    n = 10
    for _ in range(n):
        relayer.ask(Relay(1)).get(timeout=10)
    deadline = time.monotonic() + 10
    while counter.ask(Add(0)).get(timeout=10) != n and time.monotonic() < deadline:
        pass

    _, after_reads = counted(rt)
    assert after_reads - reads == 0
    assert counted(rt)[0] > commits


def test_a_passivated_actor_wakes_with_two_commits_and_no_read(dsn: str) -> None:
    with Runtime(dsn, idle_timeout=0.05) as rt:
        ref = rt.spawn(Counter, id="counter")
        ref.ask(Add(0)).get(timeout=10)
        commits, reads = counted(rt)
        n = 5
        for i in range(n):
            deadline = time.monotonic() + 5
            while rt.host.live_activations() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ref.ask(Add(1)).get(timeout=10) == i + 1
        after_commits, after_reads = counted(rt)
    # Each: the message with the claim of a new epoch, then the settle.
    assert after_commits - commits <= 2 * n
    assert after_reads - reads == 0


def test_an_activation_that_starts_with_a_message_waiting_reads_once(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message from another process to a passivated actor: its activation claims it, and
    # reads its mailbox with the head message's journal in one query (it read them apart).
    # Counted by call, not by ``Store.reads``: the node's periodic rescan of the fleet may
    # fall in the same moment.
    with Runtime(dsn, idle_timeout=0.05) as rt:
        assert rt.store is not None
        calls = count_calls(monkeypatch, rt.store, ("mailbox_and_head", "mailbox", "journal"))
        ref = rt.spawn(Counter, id="counter")
        ref.ask(Add(0)).get(timeout=10)
        deadline = time.monotonic() + 5
        while rt.host.live_activations() and time.monotonic() < deadline:
            time.sleep(0.01)
        calls.clear()
        with Store(dsn) as other:
            assert ActorRef("counter", other).ask(Add(3)).get(timeout=10) == 3
    assert calls == {"mailbox_and_head": 1}


def test_an_ask_whose_reply_comes_from_another_process_reads_it(dsn: str) -> None:
    # The settle carries its record only within the process that wrote it: an asker with no
    # runtime here is woken by NOTIFY, and reads the reply.
    from promissory import Store
    from promissory.actors import ActorRef

    with Runtime(dsn) as rt:
        rt.spawn(Counter, id="counter").ask(Add(0)).get(timeout=10)
        with Store(dsn) as other:
            reply = ActorRef("counter", other).ask(Add(2))
            assert reply.get(timeout=10) == 2
            assert other.reads >= 1


def test_spawn_ask_keeps_the_actor_its_message_and_its_claim_in_one_commit(rt: Runtime) -> None:
    rt.spawn(Counter, id="warm").ask(Add(0)).get(timeout=10)  # pools and prepared statements
    commits, reads = counted(rt)

    n = 5
    for i in range(n):
        assert rt.spawn_ask(Counter, Add(i), id=f"fresh/{i}").get(timeout=10) == i

    after_commits, after_reads = counted(rt)
    # Each: the actor with its message and this node's claim, then the settle.
    assert after_commits - commits <= 2 * n
    assert after_reads - reads == 0
    assert rt.store is not None
    epochs = rt.store.read(
        lambda conn: conn.execute(
            "SELECT count(*), min(epoch), max(epoch) FROM actors WHERE id LIKE 'fresh/%%'"
        ).fetchone()
    )
    assert epochs == (n, 1, 1)  # claimed once, by the send


def test_spawn_ask_of_an_existing_actor_sends_it_the_message(rt: Runtime) -> None:
    ref = rt.spawn(Counter, id="counter")
    assert ref.ask(Add(2)).get(timeout=10) == 2
    assert rt.spawn_ask(Counter, Add(3), id="counter", message_id="counter/m3").get(10) == 5
    assert rt.spawn_ask(Counter, Add(3), id="counter", message_id="counter/m3").get(10) == 5


class Other(DurableActor[None]):
    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        return -1


def test_spawn_ask_of_an_id_taken_by_another_type_writes_nothing_and_harms_nothing(
    dsn: str,
) -> None:
    from promissory.errors import ActorExistsError

    with Runtime(dsn) as first:
        first.spawn(Counter, id="counter").ask(Add(1)).get(timeout=10)
    with Runtime(dsn) as rt:  # knows nothing of "counter" yet
        with pytest.raises(ActorExistsError, match="counter"):
            rt.spawn_ask(Other, Add(5), id="counter", message_id="counter/refused")
        assert rt.store is not None
        assert rt.store.find("counter/refused") is None
        assert rt.ref("counter").ask(Add(1)).get(timeout=10) == 2  # still a Counter


def test_spawn_ask_with_a_message_id_taken_by_a_promise_keeps_nothing(rt: Runtime) -> None:
    from promissory.errors import InvalidInputError

    assert rt.store is not None
    rt.store.create("taken/id")
    with pytest.raises(InvalidInputError, match="taken"):
        rt.spawn_ask(Counter, Add(1), id="newcomer", message_id="taken/id")
    assert rt.store.actor_row("newcomer") is None  # no actor without its message


def test_an_agent_run_started_here_is_awaited_with_no_read(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its end is caught as it is written here (the reply of the send that started it): the
    # caller reads nothing. (The node's own bookkeeping of the run's end reads, on its
    # workers: those reads are not the caller's.)
    import threading

    from promissory.agents import Agent, ScriptedModel
    from promissory.store import Store

    agent = Agent("cost-poet", "Write one line.", ScriptedModel(["Rows remember."] * 4))
    assert rt.run(agent, "warm up", id="cost/poems/0", timeout=10) == "Rows remember."
    callers: list[str] = []
    real = Store.read

    def read(self: Store, fn: Any, **options: Any) -> Any:
        callers.append(threading.current_thread().name)
        return real(self, fn, **options)

    monkeypatch.setattr(Store, "read", read)
    for i in range(1, 4):
        handle = rt.start(agent, "a line", id=f"cost/poems/{i}")
        assert handle.result(timeout=10) == "Rows remember."
    assert threading.current_thread().name not in callers


def test_a_message_the_node_hands_over_itself_is_not_announced_and_others_are(
    rt: Runtime, dsn: str
) -> None:
    # Every listening node wakes for a message's NOTIFY; one this node sends to an actor it
    # holds it hands over itself, so none is sent. A message from another process, or to an
    # actor no node holds, is announced as before (and handled).
    ref = rt.spawn(Counter, id="counter")
    rt.spawn(Relayer, id="relayer")
    ref.ask(Add(0)).get(timeout=10)
    with Store(dsn) as other:
        heard: list[str] = []
        other.subscribe(EventKind.MESSAGE, [""], lambda kind, key, resync: heard.append(key))
        ref.tell(Add(1))  # from this node, outside any handler
        rt.ref("relayer").ask(Relay(2)).get(timeout=10)  # and from a handler, by ctx.send
        rt.spawn_ask(Counter, Add(3), id="counter/2").get(timeout=10)  # and a new actor's first
        assert rt.ref("counter").ask(Add(0)).get(timeout=10) == 3
        assert [key.split("\t")[0] for key in heard] == []
        # Another process's message to the same actor is announced, and handled here.
        assert ActorRef("counter", other).ask(Add(10)).get(timeout=10) == 13
        # The reply can come before ``other``'s listener has read the NOTIFY: wait for it.
        eventually(lambda: heard, timeout=10, what="the other process's message announced")
        assert [key.split("\t")[0] for key in heard] == ["counter"]
        # So is one with a deadline: its send may give up waiting, and the node then learns
        # of it, should it be kept after all, by its NOTIFY.
        assert ref.ask(Add(1), timeout=30).get(timeout=10) == 14
        eventually(lambda: len(heard) > 1, timeout=10, what="the message with a deadline announced")
        assert [key.split("\t")[0] for key in heard] == ["counter", "counter"]
    # In the store, nothing tells the messages apart: the setting lasted one transaction.
    with Store(dsn) as store:
        assert store.read(
            lambda c: c.execute("SELECT current_setting('promissory.handed', true)").fetchone()
        ) in ((None,), ("",))
