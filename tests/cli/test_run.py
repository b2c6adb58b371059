"""``promissory run MODULE:ATTR``: a node hosting the user's actors, until SIGTERM or SIGINT."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from promissory import ActorRef, Reply, Store

from .conftest import Cli
from .kit import Procs, one_clean_line, promissory_args, sql
from .node_app import GREETER, Greet, Hold

TARGET = "tests.cli.node_app:setup"
HOLDING = r"^holding in (\d+)$"
"""What a node prints once the ``Hold`` step has started (and written its file)."""
SERVING = r"^promissory node (\S+) serving tests\.cli\.node_app:setup \(recovered (\d+) actors, "


def test_a_node_serves_messages_sent_from_another_process_and_drains_on_sigterm(
    procs: Procs, dsn: str
) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET))
    node_id = node.wait_for_line(SERVING).group(1)

    with Store(dsn) as store:
        answer = ActorRef(GREETER, store).ask(Greet(name="ada")).get(timeout=15)
        again = ActorRef(GREETER, store).ask(Greet(name="bob")).get(timeout=15)
    assert answer == f"hello, ada (#1, node pid {node.popen.pid})"
    assert again.startswith("hello, bob (#2, ")
    assert sql(dsn, "SELECT id FROM nodes") == [(node_id,)]

    node.send(signal.SIGTERM)

    assert node.wait(20) == 0, node.stderr
    assert node.out[-2:] == [
        "promissory: draining (no new work; in-flight messages finish)",
        "promissory: stopped",
    ]
    assert "Traceback" not in node.stderr
    # The lease is handed back: the node's row says it ended, the actor is held by nobody,
    # its state kept.
    assert sql(dsn, "SELECT id FROM nodes WHERE ended_at IS NULL") == []
    assert sql(dsn, "SELECT node, state FROM actors WHERE id = %s", GREETER) == [
        (None, {"count": 2})
    ]


def test_sigint_stops_a_node_like_sigterm(procs: Procs, dsn: str) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET))
    node.wait_for_line(SERVING)

    node.send(signal.SIGINT)

    assert node.wait(20) == 0, node.stderr
    assert node.out[-1] == "promissory: stopped"
    assert "Traceback" not in node.stderr
    assert sql(dsn, "SELECT id FROM nodes WHERE ended_at IS NULL") == []


def test_json_prints_each_event_as_a_line_of_json(procs: Procs, dsn: str) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET, "--json"))
    first = node.wait_for_line(r'^\{"event":"serving"').string

    node.send(signal.SIGTERM)

    assert node.wait(20) == 0, node.stderr
    serving = json.loads(first)
    assert serving["target"] == TARGET and serving["node"]
    assert set(serving["recovery"]) >= {"actors", "activated", "suspended"}
    assert [json.loads(line) for line in node.out[-2:]] == [
        {"event": "draining"},
        {"event": "stopped"},
    ]


def test_a_draining_node_lets_the_handler_in_flight_finish(
    procs: Procs, dsn: str, tmp_path: Path
) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET))
    node.wait_for_line(SERVING)
    started, release = tmp_path / "started", tmp_path / "release"
    with Store(dsn) as store:
        reply = ActorRef(GREETER, store).ask(Hold(str(started), str(release)))
        node.wait_for_line(HOLDING)

        node.send(signal.SIGTERM)
        node.wait_for_line(r"^promissory: draining")
        release.touch()

        assert reply.get(timeout=15) == f"released in {node.popen.pid}"
    assert node.wait(20) == 0, node.stderr
    assert node.out[-1] == "promissory: stopped"


def test_work_left_by_a_killed_node_is_recovered_by_the_next(
    procs: Procs, cli: Cli, dsn: str, tmp_path: Path
) -> None:
    first = procs.start(promissory_args(dsn, "run", TARGET))
    first.wait_for_line(SERVING)
    started, release = tmp_path / "started", tmp_path / "release"
    with Store(dsn) as store:
        reply = ActorRef(GREETER, store).ask(Hold(str(started), str(release)))
        assert first.wait_for_line(HOLDING).group(1) == str(first.popen.pid)
        assert started.read_text() == str(first.popen.pid)

        first.send(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        # Nobody hosts the greeter now (its node's lease is gone); its message waits.
        tree = cli("tree", GREETER)
        assert tree.returncode == 0, tree.stderr
        assert tree.stdout.strip() == (
            f"{GREETER}  [Greeter] unhosted: waiting for a node that hosts "
            "tests.cli.node_app:Greeter, restarts 0, pending 1"
        )
        started.unlink()

        second = procs.start(promissory_args(dsn, "run", TARGET))
        recovered = second.wait_for_line(SERVING)
        assert int(recovered.group(2)) >= 1
        assert "1 active" in recovered.string
        # The step was not kept before the kill: it runs again, in the second node.
        assert second.wait_for_line(HOLDING).group(1) == str(second.popen.pid)
        assert started.read_text() == str(second.popen.pid)
        release.touch()

        assert reply.get(timeout=15) == f"released in {second.popen.pid}"
        assert Reply(reply.id, store).promise().state.value == "resolved"
    second.send(signal.SIGTERM)
    assert second.wait(20) == 0, second.stderr
    assert sql(dsn, "SELECT count(*) FROM nodes WHERE ended_at IS NULL") == [(0,)]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "tests.cli.no_such_module:setup",
            "promissory: no module named 'tests.cli.no_such_module' "
            "(from 'tests.cli.no_such_module:setup')",
        ),
        ("no_such_top_level:app", "promissory: no module named 'no_such_top_level'"),
        (
            "tests.cli.node_app:no_such_attr",
            "promissory: module 'tests.cli.node_app' has no attribute 'no_such_attr'",
        ),
        (
            "tests.cli.node_app:Greeter.no_such",
            "promissory: module 'tests.cli.node_app' has no attribute 'Greeter.no_such'",
        ),
        (":setup", "promissory: expected MODULE:ATTR, got ':setup'"),
    ],
)
def test_a_target_that_does_not_exist_is_one_clear_line(
    cli: Cli, dsn: str, target: str, message: str
) -> None:
    line = one_clean_line(cli("run", target))

    assert line.startswith(message)
    assert sql(dsn, "SELECT to_regclass('nodes')") == [(None,)]  # nothing was started


def test_run_needs_a_target(cli: Cli) -> None:
    done = cli("run")

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "MODULE:ATTR" in done.stderr
