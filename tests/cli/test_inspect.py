"""``promissory tree``, ``show`` and ``promises``: reading a finished demo run from the store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from .conftest import Cli, FinishedDemo
from .kit import one_clean_line, sql


@pytest.fixture
def demo_cli(cli: Cli, finished_demo: FinishedDemo) -> Iterator[Cli]:
    """``cli`` on the schema of the finished demo run."""

    def call(*args: str, **kwargs: object) -> object:
        return cli(*args, dsn=finished_demo.dsn, **kwargs)

    yield call  # type: ignore[misc]


# -- tree ----------------------------------------------------------------------------------------


def test_tree_of_the_run_shows_status_restarts_and_pending(
    demo_cli: Cli, finished_demo: FinishedDemo
) -> None:
    run = finished_demo.run_id

    done = demo_cli("tree", run)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{run}  [lead] stopped, restarts 0, pending 0",
        f"├── {run}/t1-0-scout  [scout] stopped, restarts 0, pending 0",
        f"├── {run}/t1-1-flaky  [flaky] stopped, restarts 1, pending 0",
        f"└── {run}/t1-2-broken  [broken] failed, restarts 2, pending 0",
    ]


def test_tree_json(demo_cli: Cli, finished_demo: FinishedDemo) -> None:
    run = finished_demo.run_id

    done = demo_cli("tree", run, "--json")

    assert done.returncode == 0, done.stderr
    [root] = json.loads(done.stdout)
    assert (root["id"], root["status"], root["restarts"], root["pending"]) == (
        run,
        "stopped",
        0,
        0,
    )
    assert root["kind"] == "agent:lead"
    children = {c["id"]: (c["status"], c["restarts"], c["children"]) for c in root["children"]}
    assert children == {
        f"{run}/t1-0-scout": ("stopped", 0, []),
        f"{run}/t1-1-flaky": ("stopped", 1, []),
        f"{run}/t1-2-broken": ("failed", 2, []),
    }


def test_tree_without_an_id_shows_every_tree(demo_cli: Cli, finished_demo: FinishedDemo) -> None:
    done = demo_cli("tree", "--json")

    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in json.loads(done.stdout)] == [finished_demo.run_id]
    assert demo_cli("tree").stdout == demo_cli("tree", finished_demo.run_id).stdout


def test_tree_of_a_sub_agent_is_that_subtree(demo_cli: Cli, finished_demo: FinishedDemo) -> None:
    done = demo_cli("tree", f"{finished_demo.run_id}/t1-1-flaky")

    assert done.stdout.strip() == (
        f"{finished_demo.run_id}/t1-1-flaky  [flaky] stopped, restarts 1, pending 0"
    )


def test_tree_of_an_unknown_actor_is_one_clear_line(demo_cli: Cli) -> None:
    line = one_clean_line(demo_cli("tree", "no/such/actor"))

    assert line == "promissory: no actor has the id 'no/such/actor'"


def test_tree_of_an_empty_store(cli: Cli) -> None:
    done = cli("tree")

    assert (done.returncode, done.stdout.strip()) == (0, "(no actors)")
    assert json.loads(cli("tree", "--json").stdout) == []


# -- show ----------------------------------------------------------------------------------------


def test_show_prints_the_run_as_a_timeline(demo_cli: Cli, finished_demo: FinishedDemo) -> None:
    run = finished_demo.run_id

    done = demo_cli("show", run)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = [c.strip() for c in lines[0].split("|")]
    assert header == ["id", "what", "state", "created", "settled", "attempt", "param / value"]
    rows = {}
    for line in lines[2:]:
        if re.fullmatch(r"\(\d+ rows?\)", line):
            continue
        cells = [c.strip() for c in line.split("|")]
        rows[cells[0]] = cells
    assert len(rows) == finished_demo.summary["steps_kept"] + 1
    first = [c.strip() for c in lines[2].split("|")]
    assert first[:3] == [run, f"RunTask -> {run}", "resolved"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", first[3])
    assert first[6].startswith("Findings:")
    assert rows["…/1"][1:3] == ["model:lead", "resolved"]
    assert rows["…/1"][5] == "1"  # the attempt
    assert rows["…/1"][6] == "calls scout, flaky, broken"
    assert rows["…/3/2"][1:3] == ["tool:search", "resolved"]
    assert rows["…/5"][1:3] == ["RunTask -> …/t1-1-flaky", "resolved"]
    assert rows["…/5/1"][1:3] == ["model:flaky", "rejected"]
    assert rows["…/5/1"][6] == "ModelError: flaky: the answer came back truncated"
    assert rows["…/5/1~1"][2] == "resolved"  # the restarted researcher tried again
    assert rows["…/7"][2:3] == ["rejected"]
    assert rows["…/7/1~2"][6] == "ModelError: broken: the model is unavailable"


def test_show_json_lists_the_promise_and_those_under_it(
    demo_cli: Cli, finished_demo: FinishedDemo
) -> None:
    run = finished_demo.run_id

    promises = json.loads(demo_cli("show", run, "--json").stdout)

    assert promises[0]["id"] == run
    assert promises[0]["state"] == "resolved"
    assert promises[0]["value"]["output"] == finished_demo.summary["result"]
    assert all(p["id"].startswith(run + "/") for p in promises[1:])
    assert len(promises) == finished_demo.summary["steps_kept"] + 1
    assert set(promises[0]) >= {"id", "state", "kind", "param", "value", "created_at", "attempt"}


def test_show_of_a_step_shows_it_and_its_children(
    demo_cli: Cli, finished_demo: FinishedDemo
) -> None:
    flaky = f"{finished_demo.run_id}/5"

    promises = json.loads(demo_cli("show", flaky, "--json").stdout)

    assert [p["id"] for p in promises][0] == flaky
    assert {p["id"] for p in promises[1:]} == {
        f"{flaky}/1",
        f"{flaky}/1~1",
        f"{flaky}/2",
        f"{flaky}/3",
    }


def test_show_of_an_unknown_id_is_one_clear_line(demo_cli: Cli) -> None:
    line = one_clean_line(demo_cli("show", "no/such/run"))

    assert line == "promissory: no promise or actor has the id 'no/such/run'"


# -- promises ------------------------------------------------------------------------------------


def test_promises_with_a_prefix_lists_them_oldest_first(
    demo_cli: Cli, finished_demo: FinishedDemo
) -> None:
    run = finished_demo.run_id

    listed = json.loads(
        demo_cli("promises", "--prefix", run + "/", "--limit", "100", "--json").stdout
    )

    ids = [p["id"] for p in listed]
    assert len(ids) == finished_demo.summary["steps_kept"]
    assert all(i.startswith(run + "/") for i in ids)
    in_order = sql(
        finished_demo.dsn, "SELECT id FROM promises WHERE id LIKE %s ORDER BY seq", run + "/%"
    )
    assert ids == [r[0] for r in in_order]


def test_promises_by_state(demo_cli: Cli, finished_demo: FinishedDemo) -> None:
    run = finished_demo.run_id

    rejected = json.loads(
        demo_cli("promises", "--state", "rejected", "--prefix", run, "--json").stdout
    )

    assert {p["id"][len(run) :] for p in rejected} == {"/5/1", "/7", "/7/1", "/7/1~1", "/7/1~2"}
    assert {p["state"] for p in rejected} == {"rejected"}
    pending = json.loads(demo_cli("promises", "--state", "pending", "--json").stdout)
    assert pending == []


def test_promises_as_a_table_says_when_there_are_more(
    demo_cli: Cli, finished_demo: FinishedDemo
) -> None:
    done = demo_cli("promises", "--limit", "3")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["id", "kind", "state", "created", "value"]
    assert [c.strip() for c in lines[2].split("|")][:3] == [
        finished_demo.run_id,
        "message",
        "resolved",
    ]
    assert lines[5] == "(3 rows)"
    assert lines[6] == "(more: raise --limit to see past 3)"
    assert len(json.loads(demo_cli("promises", "--limit", "3", "--json").stdout)) == 3


def test_promises_with_nothing_to_list(cli: Cli) -> None:
    done = cli("promises", "--prefix", "nothing/")

    assert done.returncode == 0, done.stderr
    assert "(more" not in done.stdout
    assert json.loads(cli("promises", "--prefix", "nothing/", "--json").stdout) == []


def test_a_bad_state_is_one_clear_line_and_exit_2(demo_cli: Cli) -> None:
    done = demo_cli("promises", "--state", "bogus")

    line = one_clean_line(done)
    assert done.returncode == 2
    assert "bogus" in line
    assert "pending, resolved, rejected, rejected_canceled, rejected_timedout" in line


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_bad_limit_is_one_clear_line_and_exit_2(demo_cli: Cli, limit: str) -> None:
    done = demo_cli("promises", "--limit", limit)

    assert one_clean_line(done) == (
        f"promissory: argument --limit: must be between 1 and 1000000000, not {limit} "
        "(see promissory promises --help)"
    )
    assert done.returncode == 2
