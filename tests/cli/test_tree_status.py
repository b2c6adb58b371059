"""``tree`` and ``show ACTOR`` say where each actor is: a word for each case, read from the
store and the nodes' leases (issue 14, items 7 and 11)."""

from __future__ import annotations

import json
import threading

import msgspec
import pytest

from promissory import Context, DurableActor, Runtime, Store, handler

from .conftest import Cli
from .kit import eventually, one_clean_line, sql

release = threading.Event()


class Count(msgspec.Struct):
    n: int = 0


class Add(msgspec.Struct):
    by: int


class Nap(msgspec.Struct):
    seconds: float


class Block(msgspec.Struct):
    pass


def blocked() -> str:
    release.wait(30)
    return "released"


class Worker(DurableActor[Count]):
    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        self.state = Count(self.state.n + msg.by)
        return self.state.n

    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        ctx.sleep(msg.seconds)
        return "rested"

    @handler
    def block(self, ctx: Context, msg: Block) -> str:
        return str(ctx.step(blocked))


def statuses(cli: Cli) -> dict[str, str]:
    done = cli("tree", "--json")
    assert done.returncode == 0, done.stderr

    def walk(nodes: list[dict[str, object]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for n in nodes:
            found[str(n["id"])] = str(n["status"])
            found.update(walk(n["children"]))  # type: ignore[arg-type]
        return found

    return walk(json.loads(done.stdout))


def test_tree_gives_idle_waiting_running_unhosted_and_ending_their_own_words(
    cli: Cli, dsn: str
) -> None:
    release.clear()
    with Runtime(dsn) as rt:
        rt.spawn(Worker, id="w/idle").ask(Add(by=1)).get(timeout=10)
        rt.spawn(Worker, id="w/waiting").tell(Nap(3600))
        busy = rt.spawn(Worker, id="w/running").ask(Block())
        rt.spawn(Worker, id="w/ended")
        try:
            # A suspension is a row and nothing signals it: look for it.
            eventually(
                lambda: sql(
                    dsn,
                    "SELECT 1 FROM promises WHERE recipient = 'w/waiting' "
                    "AND state = 'pending' AND awaiting IS NOT NULL",
                ),
                what="the nap suspended",
            )
            live = statuses(cli)
        finally:
            release.set()
        assert busy.get(timeout=10) == "released"
        rt.stop("w/ended")
    assert live["w/idle"] == "idle"
    assert live["w/waiting"] == "waiting"
    assert live["w/running"] == "running"

    with Store(dsn) as store:
        store.cancel_actor("w/waiting", "no longer wanted")  # while no process runs
    after = statuses(cli)

    assert after == {
        "w/idle": "unhosted",
        "w/waiting": "ending",
        "w/running": "unhosted",
        "w/ended": "stopped",
    }
    text = cli("tree", "w/waiting").stdout.strip()
    assert text == "w/waiting  [Worker] ending, restarts 0, pending 0"


@pytest.fixture
def team(dsn: str) -> str:
    """A few trees, by parent links (ids that are not prefixes of each other too)."""
    with Store(dsn) as store:
        store.read(
            lambda conn: conn.execute(
                "INSERT INTO actors (id, parent, kind, status) VALUES "
                "('lead', NULL, 'm:A', 'running'), ('helper', 'lead', 'm:A', 'failed'), "
                "('lead/x', 'lead', 'm:A', 'stopped'), ('other', NULL, 'm:A', 'stopped'), "
                "('leader', NULL, 'm:A', 'running')"
            )
        )
    return dsn


def test_tree_of_a_root_is_it_and_its_descendants_by_parent_links(cli: Cli, team: str) -> None:
    done = cli("tree", "lead")

    assert done.stdout.splitlines() == [
        "lead  [A] unhosted: waiting for a node that hosts m:A, restarts 0, pending 0",
        "├── helper  [A] failed, restarts 0, pending 0",
        "└── lead/x  [A] stopped, restarts 0, pending 0",
    ]


def test_tree_takes_a_status_filter_and_a_limit(cli: Cli, team: str) -> None:
    stopped = cli("tree", "--status", "stopped")
    first_two = cli("tree", "--limit", "2")

    assert stopped.stdout.splitlines() == [
        "lead/x  [A] stopped, restarts 0, pending 0",
        "other  [A] stopped, restarts 0, pending 0",
    ]
    assert first_two.stdout.splitlines() == [
        "lead  [A] unhosted: waiting for a node that hosts m:A, restarts 0, pending 0",
        "└── helper  [A] failed, restarts 0, pending 0",
        "(more: raise --limit to see past 2)",
    ]
    assert "invalid choice" in one_clean_line(cli("tree", "--status", "sleeping"))


def test_show_of_an_actor_prints_its_status_incarnation_and_state(cli: Cli, dsn: str) -> None:
    with Runtime(dsn) as rt:
        counter = rt.spawn(Worker, id="counters/main")
        counter.ask(Add(by=2)).get(timeout=10)
        counter.ask(Add(by=3)).get(timeout=10)
        text = cli("show", "counters/main")
        as_json = cli("show", "counters/main", "--json")

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "actor:       counters/main"
    assert lines[2].startswith("status:      idle: hosted by a live node")
    assert lines[3].startswith("incarnation: 0 (restarts so far")
    assert lines[-4:] == ["state:", "{", '  "n": 5', "}"]
    actor = json.loads(as_json.stdout)
    assert (actor["status"], actor["incarnation"], actor["state"]) == ("idle", 0, {"n": 5})
    assert actor["pending"] == 0


def test_show_actor_shows_the_actor_of_a_run_whose_promise_has_the_same_id(
    cli: Cli, dsn: str
) -> None:
    with Store(dsn) as store:
        store.create("runs/1")
        store.read(
            lambda conn: conn.execute(
                "INSERT INTO actors (id, kind, status) VALUES ('runs/1', 'm:Run', 'stopped')"
            )
        )

    timeline = cli("show", "runs/1")
    actor = cli("show", "runs/1", "--actor", "--json")

    assert timeline.stdout.startswith("id ")
    assert json.loads(actor.stdout)["kind"] == "m:Run"
    line = one_clean_line(cli("show", "nobody", "--actor"))
    assert line == "promissory: no actor has the id 'nobody'"
