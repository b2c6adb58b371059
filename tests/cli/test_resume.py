"""``promissory resume ID``: a run canceled with ``promissory cancel`` goes on as a new run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from promissory import Runtime

from .conftest import Cli
from .kit import Procs, eventually, one_clean_line, promissory_args, sql
from .resumable import AGENT, agent

RUN = "cli/resume-1"
MODULE = ["--module", "tests.cli.resumable"]


def state_of(dsn: str, id: str) -> str | None:
    rows = sql(dsn, "SELECT state FROM promises WHERE id = %s", id)
    return str(rows[0][0]) if rows else None


def tools_run(dsn: str, run_id: str) -> list[str]:
    """The function tools the run called (its kept tool steps), in order."""
    rows = sql(
        dsn,
        "SELECT fingerprint FROM promises WHERE id LIKE %s AND fingerprint LIKE 'step:tool:%%' "
        "ORDER BY seq",
        run_id + "/%",
    )
    return [fp.split(":")[2] for (fp,) in rows]


@pytest.fixture
def canceled_run(dsn: str, cli: Cli) -> Iterator[str]:
    """A run canceled by ``promissory cancel`` while it waited for a person, after one turn."""
    with Runtime(dsn) as rt:
        handle = rt.start(agent, "Look x up, then ask.", id=RUN)
        eventually(lambda: state_of(dsn, f"approvals/{RUN}") == "pending", what="the question")

        canceled = cli("cancel", RUN, "--reason", "the user went home")

        assert (canceled.returncode, canceled.stdout.strip()) == (0, f"{RUN}: canceled")
        eventually(handle.done, what="the run ended")
    assert state_of(dsn, RUN) == "rejected_canceled"
    assert tools_run(dsn, RUN) == ["lookup"]
    yield RUN


def test_a_canceled_run_resumes_from_its_last_whole_turn(
    canceled_run: str, cli: Cli, procs: Procs, dsn: str
) -> None:
    new_run = f"{canceled_run}~resume1"
    resume = procs.start(promissory_args(dsn, "resume", canceled_run, *MODULE, "--json"))
    # The new run asks the person again, on its own promise.
    eventually(lambda: state_of(dsn, f"approvals/{new_run}") == "pending", what="the question")

    # Still waiting: it cannot be resumed, it is running.
    running = one_clean_line(cli("resume", new_run, *MODULE))
    assert running == f"promissory: {new_run!r} is still running; nothing to resume"

    approved = cli("resolve", f"approvals/{new_run}", "--value", '"yes"')
    assert approved.returncode == 0, approved.stderr

    assert resume.wait(30) == 0, resume.stderr
    assert json.loads(resume.stdout) == {
        "run_id": new_run,
        "resumed": canceled_run,
        "result": "done: x is 42; the person said yes",
    }
    assert state_of(dsn, new_run) == "resolved"
    # Its progress, on stderr, one JSON object a line.
    events = [json.loads(line) for line in resume.err if line.startswith("{")]
    started = next(e for e in events if e["event"] == "run.started")
    assert started["run"] == new_run and started["continues"] == canceled_run
    assert any(e["event"] == "run.waiting" and e["run"] == new_run for e in events)
    assert any(e["event"] == "run.finished" and e["run"] == new_run for e in events)
    # The lookup of the first turn was not called again: its result came from the old run
    # (ask_person, a durable tool, runs in the handler and keeps no step of its own).
    assert tools_run(dsn, new_run) == []
    assert state_of(dsn, canceled_run) == "rejected_canceled"

    # A finished run cannot be resumed.
    finished = one_clean_line(cli("resume", new_run, *MODULE))
    assert finished == (
        f"promissory: {new_run!r} is resolved; only a canceled or timed-out run can be resumed"
    )


def test_resuming_twice_joins_the_first_continuation_and_runs_nothing_twice(
    canceled_run: str, cli: Cli, procs: Procs, dsn: str
) -> None:
    new_run = f"{canceled_run}~resume1"
    first = procs.start(promissory_args(dsn, "resume", canceled_run, *MODULE))
    eventually(lambda: state_of(dsn, f"approvals/{new_run}") == "pending")
    # A second resume (another terminal, a retried deploy script) joins the running one.
    second = procs.start(promissory_args(dsn, "resume", canceled_run, *MODULE))
    time.sleep(1.0)  # it prints only at the end; joining early or late answers the same
    assert cli("resolve", f"approvals/{new_run}", "--value", '"no"').returncode == 0

    for proc in (first, second):
        assert proc.wait(30) == 0, proc.stderr
        assert proc.out == [
            f"{new_run} (resuming {canceled_run}):",
            "done: x is 42; the person said no",
        ]
    assert state_of(dsn, f"{canceled_run}~resume2") is None
    # Once it finished, resuming the original again still answers with that continuation.
    again = cli("resume", canceled_run, *MODULE)
    assert again.returncode == 0 and again.stdout.splitlines()[0].startswith(new_run)
    assert state_of(dsn, f"{canceled_run}~resume2") is None


def test_resume_without_the_agent_s_module_says_to_pass_it(
    canceled_run: str, cli: Cli, dsn: str
) -> None:
    line = one_clean_line(cli("resume", canceled_run))

    assert f"no agent named {AGENT!r}" in line
    assert line.endswith("(pass --module)")
    assert state_of(dsn, f"{canceled_run}~resume1") is None  # no new run was started


def test_resume_of_an_unknown_run_is_one_clear_line(cli: Cli, dsn: str) -> None:
    line = one_clean_line(cli("resume", "no/such/run"))

    assert line == "promissory: no run has the id 'no/such/run'"


def test_resume_with_a_module_that_does_not_exist_is_one_clear_line(cli: Cli) -> None:
    done = cli("resume", RUN, "--module", "tests.cli.no_such_module")

    assert one_clean_line(done) == (
        "promissory: no module named 'tests.cli.no_such_module' (from 'tests.cli.no_such_module')"
    )
    assert done.returncode == 2
