"""``promissory demo``: the research team, uninterrupted, and killed by SIGKILL then resumed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import Cli, FinishedDemo

if TYPE_CHECKING:
    from tests.agents.fake_llm import Answer, Recorded
from .kit import ROOT, child_env, json_out, sql


def timeline(dsn: str, run_id: str) -> list[tuple[str, str]]:
    """(id relative to the run, state) of every promise under the run, in creation order."""
    rows = sql(
        dsn,
        "SELECT id, state FROM promises WHERE id LIKE %s ORDER BY seq",
        run_id.replace("_", r"\_") + "/%",
    )
    return [(id[len(run_id) :], state) for id, state in rows]


def settled_under(dsn: str, run_id: str) -> int:
    return sum(1 for _, state in timeline(dsn, run_id) if state != "pending")


def settled_after_kill(dsn: str, run_id: str) -> list[str]:
    """The ids of the promises settled under the run once a SIGKILLed process's last COMMIT
    has landed: one it had sent when it died is still carried out by the server, a moment
    after the process is gone (the set holds still for a second, then)."""

    def settled() -> list[str]:
        return [id for id, state in timeline(dsn, run_id) if state != "pending"]

    last, since = settled(), time.monotonic()
    deadline = since + 15
    while time.monotonic() - since < 1.0 and time.monotonic() < deadline:
        time.sleep(0.1)
        now = settled()
        if now != last:
            last, since = now, time.monotonic()
    return last


def tree_shape(dsn: str, run_id: str) -> dict[str, tuple[str, int]]:
    """Each actor of the run's tree (relative id) with its status and restart count."""
    rows = sql(
        dsn,
        "SELECT id, status, restarts FROM actors WHERE id = %s OR id LIKE %s",
        run_id,
        run_id + "/%",
    )
    return {id[len(run_id) :]: (status, restarts) for id, status, restarts in rows}


def test_an_uninterrupted_run_prints_result_run_id_tree_and_sql(cli: Cli, dsn: str) -> None:
    done = cli("demo")

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in done.stderr
    started = re.search(r"^Starting (demo/\S+): ", out, re.M)
    assert started, out
    run_id = started.group(1)
    assert "Resuming" not in out
    # Each step is shown as it is kept.
    assert re.search(r"^  kept +/1 +model:lead +resolved +calls scout, flaky, broken$", out, re.M)
    assert re.search(r"^  kept +/5/1~1 +model:flaky +resolved", out, re.M)
    # The result, under the run's id.
    result = out.split(f"Result of {run_id}:\n", 1)[1].split("\n\n", 1)[0]
    assert result.startswith("Findings:\n- scout: ")
    assert "- flaky: " in result
    assert "(Not covered: broken failed and was given up; the answer stands on the rest.)" in result
    # The supervision tree: the flaky researcher restarted once, the broken one given up.
    tree = out.split("Supervision tree:\n", 1)[1]
    assert re.search(rf"^{re.escape(run_id)}  \[lead\] stopped, restarts 0, pending 0$", tree, re.M)
    assert re.search(r"t1-0-scout  \[scout\] stopped, restarts 0, pending 0$", tree, re.M)
    assert re.search(r"t1-1-flaky  \[flaky\] stopped, restarts 1, pending 0$", tree, re.M)
    assert re.search(r"t1-2-broken  \[broken\] failed, restarts 2, pending 0$", tree, re.M)
    # The SQL to read it, which works as printed.
    kept = len(timeline(dsn, run_id))
    assert f"\n{kept} steps kept (0 before this process started).\n" in out
    assert "Read the run with SQL:" in out
    queries = re.findall(r'^  promissory sql "(.*)"$', out, re.M)
    assert len(queries) == 2, out
    rows = json_out(cli("sql", queries[0], "--json"))
    assert [r["id"] for r in rows] == [run_id]
    assert rows[0]["state"] == "resolved"
    assert rows[0]["value"]["output"] == result
    steps = json_out(cli("sql", queries[1], "--json"))
    assert len(steps) == kept
    assert f"  promissory show {run_id}" in out


def test_json_prints_one_object_with_run_id_result_steps_and_resumed_from(
    finished_demo: FinishedDemo,
) -> None:
    summary = finished_demo.summary

    assert summary["run_id"].startswith("demo/")
    assert summary["resumed_from"] == 0
    assert summary["result"].startswith("Findings:\n- scout: ")
    assert summary["steps_kept"] == len(timeline(finished_demo.dsn, finished_demo.run_id))
    assert summary["stop"] == "final_answer"
    [(state, value)] = sql(
        finished_demo.dsn, "SELECT state, value FROM promises WHERE id = %s", summary["run_id"]
    )
    assert state == "resolved"
    assert value["output"] == summary["result"]


def test_a_plain_demo_after_a_finished_run_starts_a_new_run(cli: Cli, dsn: str) -> None:
    first = json_out(cli("demo", "--json"))
    second = cli("demo", "--json")

    again = json_out(second)
    assert again["run_id"] != first["run_id"]
    assert again["resumed_from"] == 0
    assert again["result"] == first["result"]
    assert "Starting " + again["run_id"] in second.stderr  # progress goes to stderr with --json
    assert "Resuming" not in second.stderr


@pytest.mark.parametrize("crash_after", [2, 5, 9])
def test_a_crashed_run_is_resumed_by_a_plain_demo_with_the_same_result(
    cli: Cli, dsn: str, finished_demo: FinishedDemo, crash_after: int
) -> None:
    crashed = cli("demo", "--crash-after", str(crash_after))

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    started = re.search(r"^Starting (demo/\S+): ", crashed.stdout, re.M)
    assert started, crashed.stdout
    run_id = started.group(1)
    assert f"(will crash with SIGKILL after {crash_after} more kept steps)" in crashed.stdout
    assert "Result of" not in crashed.stdout
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = %s", run_id)
    assert state == "pending"
    kept_before = len(settled_after_kill(dsn, run_id))
    assert kept_before >= crash_after

    resumed = cli("demo", "--json")

    summary = json_out(resumed)
    assert summary["run_id"] == run_id
    assert summary["resumed_from"] == kept_before
    assert summary["result"] == finished_demo.summary["result"]
    assert summary["steps_kept"] == finished_demo.summary["steps_kept"]
    progress = resumed.stderr
    assert f"Resuming {run_id}: {kept_before} steps were kept before it stopped." in progress
    assert len(re.findall(r"^  replayed ", progress, re.M)) == kept_before
    assert len(re.findall(r"^  kept ", progress, re.M)) == summary["steps_kept"] - kept_before
    # The run kept exactly the steps an uninterrupted run keeps, and its tree ended the same.
    assert sorted(timeline(dsn, run_id)) == sorted(
        timeline(finished_demo.dsn, finished_demo.run_id)
    )
    assert tree_shape(dsn, run_id) == tree_shape(finished_demo.dsn, finished_demo.run_id)


def test_the_resumed_run_says_where_it_continued(
    cli: Cli, dsn: str, finished_demo: FinishedDemo
) -> None:
    crashed = cli("demo", "--crash-after", "4")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = re.search(r"^Starting (demo/\S+): ", crashed.stdout, re.M).group(1)  # type: ignore[union-attr]
    before = settled_after_kill(dsn, run_id)

    resumed = cli("demo")

    assert resumed.returncode == 0, resumed.stderr
    out = resumed.stdout
    lines = out.splitlines()
    assert lines[0] == f"Resuming {run_id}: {len(before)} steps were kept before it stopped."
    assert lines[1] == "They are replayed from the store, not run again:"
    replayed = [line.split()[1] for line in lines if line.startswith("  replayed ")]
    assert sorted(replayed) == sorted(before)
    continued = lines.index("Continuing from there:")
    kept = [line.split()[1] for line in lines[continued:] if line.startswith("  kept ")]
    assert kept and not set(kept) & set(before)
    assert f"Result of {run_id}:\n{finished_demo.summary['result']}\n" in out
    assert f"steps kept ({len(before)} before this process started)." in out


def test_the_demo_run_after_a_crash_is_the_only_one(cli: Cli, dsn: str) -> None:
    """Resuming does not start a second run beside the crashed one."""
    crashed = cli("demo", "--crash-after", "3", "--json")
    assert crashed.returncode == -signal.SIGKILL
    assert crashed.stdout == ""  # with --json, progress goes to stderr, and no JSON was printed

    summary: dict[str, Any] = json_out(cli("demo", "--json"))

    runs = sql(
        dsn,
        "SELECT id, state FROM promises WHERE kind = 'message' AND id LIKE %s "
        "AND strpos(substr(id, 6), '/') = 0",
        "demo/%",
    )
    assert runs == [(summary["run_id"], "resolved")]
    assert summary["resumed_from"] > 0


def _fake_openai_role(request: Recorded) -> Answer:
    """Answers as each role of the demo would, from what the request holds."""
    from tests.agents.fake_llm import Answer, openai_answer

    body = request.body
    system = body["messages"][0]["content"]
    turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
    tools = [t["function"]["name"] for t in body.get("tools", [])]
    if "lead a research team" in system:
        if turn == 0:
            calls = [
                (f"ask-{name}", name, json.dumps({"input": f"Research {name}."}))
                for name in ("scout", "flaky", "broken")
            ]
            return Answer(body=openai_answer("Asking all three.", calls))
        found = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return Answer(body=openai_answer("Real-model summary: " + " | ".join(found)))
    assert tools == ["search"], tools
    if turn == 0:
        return Answer(body=openai_answer(None, [("s1", "search", '{"topic": "durable actors"}')]))
    result = [m["content"] for m in body["messages"] if m["role"] == "tool"][-1]
    return Answer(body=openai_answer(f"summary of {result[:40]}"))


def test_the_same_demo_runs_on_a_real_model_over_http(
    cli: Cli, dsn: str, env: dict[str, str]
) -> None:
    """``--model`` puts a real (here: a loopback OpenAI-compatible) model behind every agent;
    the staged trouble is the same: the flaky researcher is restarted once, the broken one is
    given up and the lead answers without it."""
    from tests.agents.fake_llm import FakeProvider

    env["OPENAI_API_KEY"] = "sk-loopback"
    fake = FakeProvider()
    try:
        for _ in range(12):
            fake.answer_with(_fake_openai_role)
        done = cli("demo", "--model", f"{fake.openai_url}#fake-model", "--json")
    finally:
        fake.close()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["result"].startswith("Real-model summary: ")
    assert "summary of " in summary["result"]
    assert "broken" in summary["result"]  # its failure came back to the lead as a tool error
    run_id = summary["run_id"]
    shape = tree_shape(dsn, run_id)
    assert shape["/t1-1-flaky"] == ("stopped", 1)
    assert shape["/t1-2-broken"] == ("failed", 2)
    # lead twice, scout and flaky twice each (flaky's first incarnation failed before asking)
    assert len(fake.requests) == 6
    assert {r.body["model"] for r in fake.requests} == {"fake-model"}
    assert {r.headers["authorization"] for r in fake.requests} == {"Bearer sk-loopback"}


def test_another_program_on_the_same_database_leaves_the_demo_run_for_the_demo_to_resume(
    cli: Cli, dsn: str, home: Path, finished_demo: FinishedDemo
) -> None:
    """The scenario of issue 16: a second program's start used to adopt the crashed demo run,
    fail to find its agents, and give it up for good; the third command then started over."""
    crashed = cli("demo", "--crash-after", "3")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run_id = re.search(r"^Starting (demo/\S+): ", crashed.stdout, re.M).group(1)  # type: ignore[union-attr]
    other = subprocess.run(
        [sys.executable, "examples/restart_policies.py"],
        cwd=ROOT,
        env=child_env(dsn, home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    assert "given up" not in other.stderr or run_id not in other.stderr
    # Untouched: still pending, its actors as they were, waiting for a node that hosts them.
    assert sql(dsn, "SELECT state FROM promises WHERE id = %s", run_id) == [("pending",)]
    tree = cli("tree", run_id)
    assert "waiting for a node that hosts agent:lead" in tree.stdout, tree.stdout
    resumed = json_out(cli("demo", "--json"))
    assert resumed["run_id"] == run_id
    assert resumed["result"] == finished_demo.summary["result"]
