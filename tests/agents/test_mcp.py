"""MCP tools: a stdio server written in the tests (``tests.agents.mcp_app``) attached to an
agent with ``mcp_server``: its tools are listed once per run, as a kept step, and each call is
a kept step with its tool's effect class; a failing tool, and a server that cannot be reached,
give error results (the run goes on)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from promissory import Runtime, mcp_server
from promissory.agents import Agent, FunctionModel, MCPServer, ModelRequest, call, reply
from promissory.errors import InvalidInputError
from tests.cli.kit import Procs, child_env
from tests.kit import ROOT, eventually, sql

SERVER = f"{sys.executable} -m tests.agents.mcp_app"


def server(counts: Path, **options: Any) -> MCPServer:
    return mcp_server(
        SERVER, name="test-server", env={"MCP_COUNTS": str(counts)}, cwd=str(ROOT), **options
    )


def scripted(*turns: Any) -> FunctionModel:
    """Answers by turn; the last answer says what the tools returned."""

    def answer(request: ModelRequest) -> Any:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn < len(turns):
            return turns[turn]
        results = [r for m in request.messages for r in m.tool_results]
        return " | ".join(f"{r.name}{'!' if r.is_error else ''}={r.content}" for r in results)

    return FunctionModel(answer, name="scripted")


def test_an_agent_calls_a_servers_tools_each_call_a_kept_step(
    rt: Runtime, dsn: str, tmp_path: Path
) -> None:
    counts = tmp_path / "counts"
    model = scripted(
        reply("", call("count", "c1", key="a")), reply("", call("count", "c2", key="a"))
    )
    agent = Agent("mcp-counter", "Count.", model=model, tools=[server(counts)])
    assert rt.run(agent, "count a twice", id="mcp/1", timeout=60) == "count=1 | count=2"
    assert counts.read_text().splitlines() == ["count a", "count a"]
    steps = sql(
        dsn,
        "SELECT id, split_part(fingerprint, ':', 2) || ':' || split_part(fingerprint, ':', 3) "
        "FROM promises WHERE starts_with(id, 'mcp/1/') ORDER BY seq",
    )
    assert [s[1] for s in steps] == [
        "mcp:list",
        "model:mcp-counter",
        "tool:count",
        "model:mcp-counter",
        "tool:count",
        "model:mcp-counter",
    ]
    [(listing,)] = sql(dsn, "SELECT value FROM promises WHERE id = 'mcp/1/1'")
    assert [t["name"] for t in listing] == ["count", "charge", "slow", "fail"]
    assert listing[0]["parameters"]["required"] == ["key"]


def test_the_model_is_told_the_servers_tools(rt: Runtime, tmp_path: Path) -> None:
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        seen.append(request)
        return "ok"

    agent = Agent(
        "mcp-told", "Hi.", model=FunctionModel(answer, name="f"), tools=[server(tmp_path / "c")]
    )
    rt.run(agent, "hi", id="mcp/2", timeout=60)
    assert [t.name for t in seen[0].tools] == ["count", "charge", "slow", "fail"]
    assert seen[0].tools[0].description == "Count a call for key, and say how many there were."


def test_a_tool_that_fails_on_the_server_is_an_error_result(rt: Runtime, tmp_path: Path) -> None:
    model = scripted(reply("", call("fail", "f1")))
    agent = Agent("mcp-failing", "Try.", model=model, tools=[server(tmp_path / "c")])
    answer = rt.run(agent, "try", id="mcp/3", timeout=60)
    assert answer.startswith("fail!=MCPServerError: MCP server test-server: tool fail failed")


def test_a_server_that_cannot_be_reached_gives_no_tools_and_the_run_goes_on(
    rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = mcp_server([sys.executable, "-c", "import sys; sys.exit(3)"], name="down")
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        seen.append(request)
        return "without tools"

    agent = Agent("mcp-down", "Hi.", model=FunctionModel(answer, name="f"), tools=[down])
    assert rt.run(agent, "hi", id="mcp/4", timeout=60) == "without tools"
    assert seen[0].tools == []
    assert "run mcp/4 goes on without the tools of MCP server down" in caplog.text


def test_bad_server_definitions_are_refused_by_name() -> None:
    with pytest.raises(InvalidInputError, match="a command line or a URL"):
        mcp_server("  ")
    with pytest.raises(InvalidInputError, match="an MCP server's name"):
        mcp_server("x", name="bad name")
    with pytest.raises(InvalidInputError, match="an effect is one of"):
        mcp_server("x", effects={"t": "twice"})
    assert mcp_server("npx -y @scope/server-files /tmp").name == "server-files"
    assert mcp_server(SERVER).name == "tests.agents.mcp_app"
    assert mcp_server("http://127.0.0.1:9/mcp").name == "127.0.0.1-9"


def test_a_server_over_streamable_http_gives_its_tools_too(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    counts = tmp_path / "counts"
    procs = Procs(child_env(None, tmp_path, PYTHONPATH=str(ROOT), MCP_COUNTS=str(counts)))
    try:
        procs.start([sys.executable, "-m", "tests.agents.mcp_app", "http", str(port)])
        eventually(lambda: _listening(port), what="the HTTP server")
        model = scripted(reply("", call("count", "c1", key="web")))
        remote = mcp_server(f"http://127.0.0.1:{port}/mcp", name="web")
        agent = Agent("mcp-over-http", "Count.", model=model, tools=[remote])
        assert rt.run(agent, "count", id="mcp/5", timeout=60) == "count=1"
    finally:
        procs.close()
    assert counts.read_text().splitlines() == ["count web"]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True
