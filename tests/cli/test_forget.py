"""``promissory forget ID [--force]`` and ``promissory run --retention AGE``, as a user runs
them: a subprocess on the test's schema (the runs are made in this process beforehand)."""

from __future__ import annotations

import argparse
import signal
from datetime import timedelta

import pytest

from promissory.cli._forgetting import parse_duration
from promissory.runtime import Runtime
from tests.store.forget_kit import (
    SOLO,
    TEAM,
    approval_of,
    backdate,
    everything_of,
    finished_team_run as finished,
)

from .conftest import Cli
from .kit import Procs, eventually, json_out, one_clean_line, promissory_args


def waiting_run(dsn: str, run_id: str) -> None:
    """A ``TEAM`` run left waiting on its approval, with no process running it."""
    with Runtime(dsn) as rt:
        rt.start(TEAM, "go", id=run_id)
        assert rt.store is not None
        store = rt.store
        eventually(lambda: store.find(approval_of(run_id)), what="waiting")


def test_forget_deletes_a_finished_run_and_says_what_went(cli: Cli, dsn: str) -> None:
    with Runtime(dsn) as rt:
        finished(rt, "cli/forget/done")
        finished(rt, "cli/forget/json")
    promises = sum(1 for row in everything_of(dsn, "cli/forget/done") if row[0] == "promise")

    done = cli("forget", "cli/forget/done")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"cli/forget/done: forgotten ({promises} promises, 2 actors)\n"
    assert everything_of(dsn, "cli/forget/done") == []
    assert json_out(cli("forget", "cli/forget/json", "--json")) == {
        "id": "cli/forget/json",
        "runs": ["cli/forget/json"],
        "promises": promises,
        "actors": 2,
        "canceled": 0,
    }


def test_forget_refuses_an_unfinished_run_in_one_line_naming_what_and_how_to_force(
    cli: Cli, dsn: str
) -> None:
    waiting_run(dsn, "cli/forget/busy")
    before = everything_of(dsn, "cli/forget/busy")

    refused = cli("forget", "cli/forget/busy")

    line = one_clean_line(refused)
    assert refused.returncode == 1
    assert line.startswith("promissory: cli/forget/busy is not finished, so it is not forgotten: ")
    assert "cli/forget/busy (message, pending)" in line
    assert "approvals/forget/cli/forget/busy (promise, owned, pending)" in line
    assert "forget it with --force" in line
    assert everything_of(dsn, "cli/forget/busy") == before


def test_forget_force_cancels_and_forgets_a_run_no_process_runs(cli: Cli, dsn: str) -> None:
    waiting_run(dsn, "cli/forget/forced")

    done = cli("forget", "cli/forget/forced", "--force")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cli/forget/forced: forgotten (")
    assert "pending canceled first)" in done.stdout
    assert everything_of(dsn, "cli/forget/forced") == []


def test_forget_of_an_id_that_is_not_there_says_so(cli: Cli, dsn: str) -> None:
    missing = cli("forget", "cli/forget/never")

    assert missing.returncode == 1
    assert missing.stderr == "cli/forget/never: no promise has this id; nothing to forget\n"
    assert missing.stdout == ""


def test_a_node_run_with_retention_forgets_old_runs(procs: Procs, dsn: str) -> None:
    with Runtime(dsn) as rt:
        rt.run(SOLO, "go", id="cli/ret/old", timeout=15)
        rt.run(SOLO, "go", id="cli/ret/new", timeout=15)
    backdate(dsn, "cli/ret/old", days=31)

    node = procs.start(
        promissory_args(dsn, "run", "tests.cli.node_app:setup", "--retention", "30d")
    )
    node.wait_for_line(r"^promissory node \S+ serving")
    eventually(lambda: everything_of(dsn, "cli/ret/old") == [], what="the old run forgotten")

    assert everything_of(dsn, "cli/ret/new") != []
    node.send(signal.SIGTERM)
    assert node.wait(20) == 0, node.stderr


def test_run_refuses_a_retention_that_is_not_a_duration(cli: Cli) -> None:
    refused = cli("run", "tests.cli.node_app:setup", "--retention", "soon")

    assert refused.returncode == 2
    assert "argument --retention: not a duration: 'soon' (write e.g. 30d, 12h, 90m, 45s, or " in (
        refused.stderr
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 43200),
        ("90m", 5400),
        ("45s", 45),
        ("2w", 14 * 86400),
        ("3600", 3600),
        ("1.5h", 5400),
    ],
)
def test_durations_are_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "0d", "-1d", "30 days", "d", "1y"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
