"""Crash-suite scenarios whose agents call the tools of the test MCP server (stdio)."""

from __future__ import annotations

import sys
from typing import Any

from promissory import Runtime, mcp_server
from promissory.agents import Agent, RunHandle, ScriptedModel, call, reply
from tests.kit import ROOT

SERVER = [sys.executable, "-m", "tests.agents.mcp_app"]


def _run(rt: Runtime, agent: Agent, run_id: str) -> Any:
    assert rt.store is not None
    if rt.store.find(run_id) is None:
        return rt.start(agent, "go", id=run_id).result(timeout=60)
    return RunHandle(run_id, rt.store).result(timeout=60)


counting = Agent(
    "mcp-crash-counting",
    "Count.",
    ScriptedModel([reply("", call("count", "c1", key="k")), "counted"]),
    tools=[mcp_server(SERVER, name="counts", cwd=str(ROOT), effects={"count": "idempotent"})],
)
charging = Agent(
    "mcp-crash-charging",
    "Charge.",
    ScriptedModel([reply("", call("charge", "c1", order="o1", cents=500)), "charged"]),
    tools=[mcp_server(SERVER, name="charges", cwd=str(ROOT), effects={"charge": "at_most_once"})],
)


def count_once(rt: Runtime) -> Any:
    return _run(rt, counting, "mcp-runs/count")


def charge_once(rt: Runtime) -> Any:
    return _run(rt, charging, "mcp-runs/charge")
