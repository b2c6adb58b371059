"""MCP tools under SIGKILL: the crash-test harness on an idempotent and an at-most-once tool
of the test server, and a kill inside a call, resumed with the server up and with it down."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from promissory.testing import CrashFailure, CrashSuite
from tests.agents import mcp_scenarios
from tests.cli.kit import Procs, child_env
from tests.kit import ROOT, eventually, sql


@pytest.mark.timeout(300)
def test_an_idempotent_mcp_tool_passes_every_boundary_and_random_kills(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_COUNTS", str(tmp_path / "counts"))
    report = CrashSuite(dsn, mcp_scenarios.count_once, workdir=tmp_path, random_kills=2).run()
    assert report.outcome == "counted"
    assert report.boundaries == 4  # the listing, two model turns, the tool call
    assert report.in_step_kills == 0


@pytest.mark.timeout(300)
def test_an_at_most_once_mcp_tool_is_killed_inside_and_named_when_it_runs_twice(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = tmp_path / "counts"
    monkeypatch.setenv("MCP_COUNTS", str(counts))
    with pytest.raises(CrashFailure) as failure:
        CrashSuite(dsn, mcp_scenarios.charge_once, workdir=tmp_path, random_kills=0).run()
    message = str(failure.value)
    assert "tool:charge is declared at_most_once, but step mcp-runs/charge/3 ran 2 times" in (
        message
    )
    assert counts.read_text().count("charge o1 500") >= 2  # the server saw it twice


APP = """
import os, sys
from promissory import Runtime, mcp_server
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply
down = os.environ.get("MCP_DOWN") == "1"
server = mcp_server(
    [sys.executable, "-c", "import sys; sys.exit(3)"] if down
    else [sys.executable, "-m", "tests.agents.mcp_app"],
    name="slowpoke",
)
script = [
    reply("", call("slow", "s1", seconds=30.0)), reply("", call("count", "c1", key="k")), "done"
]
agent = Agent("mcp-killed", "x", ScriptedModel(script), tools=[server])
with Runtime(sys.argv[1]) as rt:
    handle = rt.start(agent, "go", id="mcp-runs/killed") if len(sys.argv) > 2 else None
    print("READY", flush=True)
    result = (handle or RunHandle("mcp-runs/killed", rt.store)).result(timeout=60)
    print("RESULT", result, flush=True)
"""


@pytest.mark.parametrize("down", [False, True], ids=["server-up", "server-down"])
def test_a_kill_inside_a_call_is_resumed_with_the_kept_tool_list(
    dsn: str, tmp_path: Path, down: bool
) -> None:
    counts = tmp_path / "counts"
    script = tmp_path / "app.py"
    script.write_text(APP)
    procs = Procs(child_env(dsn, tmp_path, PYTHONPATH=str(ROOT), MCP_COUNTS=str(counts)))
    try:
        first = procs.start(
            [sys.executable, str(script), dsn, "start"], {**procs.env, "SLOW": "30"}
        )
        eventually(lambda: counts.exists() and "slow started" in counts.read_text(), 30)
        first.kill()  # SIGKILL inside the MCP call (its server goes with it)
        env = {**procs.env, "MCP_SLOW": "0", "MCP_DOWN": "1" if down else "0"}
        again = procs.start([sys.executable, str(script), dsn], env)
        line = again.wait_for_line("^RESULT ", timeout=60).string
    finally:
        procs.close()
    [(listed,)] = sql(
        dsn, "SELECT count(*) FROM promises WHERE fingerprint LIKE 'step:mcp:list:%%'"
    )
    assert listed == 1  # the listing was kept once and read back on resume
    if down:
        # The server is gone: each call is an error result naming it; the run still ends.
        assert line.startswith("RESULT done")
        assert counts.read_text().count("slow started") == 1
        [(error,)] = sql(
            dsn,
            "SELECT value->>'message' FROM promises WHERE id = 'mcp-runs/killed/3'",
        )
        assert "MCP server slowpoke" in error and "could not be reached" in error
    else:
        assert line == "RESULT done"
        assert counts.read_text().count("slow started") == 2  # the call was made again
        assert "count k" in counts.read_text()
