"""Progress lines of ``promissory run``, ``resume`` and ``demo``: a run starts, waits (on what),
resumes, restarts a child, finishes; recovery; ``--quiet`` and ``--json``."""

from __future__ import annotations

import json
import logging
import re
import signal
from typing import Any

import pytest

from promissory import ActorRef, Context, DurableActor, Reply, Runtime, Store, handler
from promissory.runtime import _recovery

from .conftest import Cli
from .kit import Procs, eventually, promissory_args, sql
from .progress_app import APPROVAL, APPROVAL_RUN, NAP_RUN

TARGET = "tests.cli.progress_app:setup"
SERVING = r"^promissory node \S+ serving"
STAMP = r"^\d\d:\d\d:\d\d "


def test_a_node_says_what_its_runs_wait_on_and_when_they_finish(
    procs: Procs, dsn: str, cli: Cli
) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET))
    node.wait_for_line(SERVING)
    eventually(lambda: f"waits on promise {APPROVAL}" in node.stderr, timeout=30)
    eventually(lambda: f"run {NAP_RUN} (progress-sleeper) waits on a timer until" in node.stderr)
    lines = node.err
    assert any(
        re.match(STAMP + re.escape(f"run {APPROVAL_RUN} (progress-asker) started"), line)
        for line in lines
    ), lines
    waits = next(line for line in lines if f"run {APPROVAL_RUN}" in line and "waits" in line)
    assert waits.endswith(f"waits on promise {APPROVAL} (settle it: promissory resolve {APPROVAL})")
    nap = next(line for line in lines if f"run {NAP_RUN}" in line and "waits" in line)
    assert re.search(
        r"waits on a timer until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 3,\d{3} s\)$", nap
    ), nap

    assert cli("resolve", APPROVAL, "--value", "true").returncode == 0

    eventually(lambda: f"run {APPROVAL_RUN} (progress-asker) finished" in node.stderr, timeout=30)
    resumed = next(line for line in node.err if f"run {APPROVAL_RUN}" in line and "resumes" in line)
    assert "kept steps replayed, not run again" in resumed
    finished = next(
        line for line in node.err if f"run {APPROVAL_RUN}" in line and "finished" in line
    )
    assert "finished: final_answer after 2 turns" in finished
    assert cli("cancel", NAP_RUN).returncode == 0
    eventually(lambda: f"run {NAP_RUN} (progress-sleeper) canceled" in node.stderr, timeout=30)
    node.send(signal.SIGTERM)
    assert node.wait(30) == 0
    assert "Traceback" not in node.stderr


def test_quiet_leaves_the_progress_out(procs: Procs, dsn: str) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET, "--quiet"))
    node.wait_for_line(SERVING)
    eventually(lambda: sql(dsn, "SELECT 1 FROM promises WHERE id = %s", APPROVAL), timeout=30)
    eventually(
        lambda: sql(
            dsn, "SELECT 1 FROM promises WHERE id LIKE %s AND kind = 'timer'", NAP_RUN + "/%"
        ),
        timeout=30,
    )
    node.send(signal.SIGTERM)
    assert node.wait(30) == 0
    assert node.stderr == ""


def test_json_prints_each_progress_line_as_an_object(procs: Procs, dsn: str) -> None:
    node = procs.start(promissory_args(dsn, "run", TARGET, "--json"))
    node.wait_for_line(r'^\{"event":"serving"')

    def events() -> list[dict[str, Any]]:
        return [json.loads(line) for line in node.err if line.startswith("{")]

    def waiting_on_approval() -> Any:
        return [e for e in events() if e["event"] == "run.waiting" and e["run"] == APPROVAL_RUN]

    [waiting] = eventually(waiting_on_approval, timeout=30)
    assert waiting["awaiting"] == [APPROVAL]
    assert waiting["agent"] == "progress-asker"
    assert waiting["logger"] == "promissory.agents" and waiting["level"] == "info"
    assert "waits on promise" in waiting["message"]
    started = [e for e in events() if e["event"] == "run.started"]
    assert {e["run"] for e in started} == {APPROVAL_RUN, NAP_RUN}
    node.send(signal.SIGTERM)
    assert node.wait(30) == 0


def test_the_demo_says_what_it_does_on_stderr(cli: Cli) -> None:
    done = cli("demo")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    run_id = re.search(r"^Starting (demo/\S+): ", done.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert re.search(STAMP + re.escape(f"run {run_id} (lead) started"), err, re.M)
    assert re.search(
        rf"run {re.escape(run_id)}/\d+ \(scout\) started, a sub-agent of "
        rf"{re.escape(run_id)}$",
        err,
        re.M,
    )
    assert re.search(rf"restarting actor {re.escape(run_id)}/t1-1-flaky after abnormal exit", err)
    assert re.search(rf"run {re.escape(run_id)} \(lead\) finished: final_answer after 2 turns", err)
    assert "warning: actor " in err and "is given up" in err  # the broken researcher
    quiet = cli("demo", "--quiet")
    assert quiet.returncode == 0
    assert "(lead) started" not in quiet.stderr


class Echo(DurableActor[None]):
    @handler
    def echo(self, ctx: Context, text: str) -> str:
        return text


def test_a_large_recovery_says_how_far_it_has_got(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with Runtime(dsn) as rt:
        for i in range(5):
            rt.spawn(Echo, id=f"echo/{i}")
    with Store(dsn) as store:  # messages sent while no node runs
        replies = [ActorRef(f"echo/{i}", store).ask(f"hi {i}") for i in range(5)]
    monkeypatch.setattr(_recovery, "PROGRESS_EVERY", 2)
    caplog.set_level(logging.INFO, logger="promissory.runtime")
    with Runtime(dsn, actors=[Echo]) as rt:
        assert rt.store is not None
        for i, reply in enumerate(replies):  # each handled by the recovery pass
            assert Reply(reply.id, rt.store).get(timeout=20) == f"hi {i}"
    said = [r.getMessage() for r in caplog.records if r.name == "promissory.runtime"]
    assert "recovery: taking up 5 actors with work (0 waiting)" in said
    assert "recovery: 2 of 5 actors taken up" in said
    assert "recovery: 4 of 5 actors taken up" in said
    done = next(s for s in said if s.startswith("recovery: 5 live actors here"))
    assert "5 with work resumed, 0 waiting on promises" in done
