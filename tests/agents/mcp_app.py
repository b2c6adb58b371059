"""A small MCP server for the tests, on stdio (``python -m tests.agents.mcp_app``) or
streamable HTTP (``python -m tests.agents.mcp_app http PORT``).

``count(key)`` counts its calls per key in ``$MCP_COUNTS`` (a line per call) and returns the
count; ``charge(order, cents)`` records a charge (a line in ``$MCP_COUNTS``) and returns a
receipt; ``slow(seconds)`` sleeps (unless ``$MCP_SLOW`` is ``0``), writing a line when it
starts, so a test can kill the agent inside a call; ``fail()`` always reports an error.
"""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("promissory-test")


def _log(line: str) -> int:
    path = os.environ.get("MCP_COUNTS")
    if not path:
        return 0
    with open(path, "a") as counts:
        counts.write(line + "\n")
    with open(path) as counts:
        return sum(1 for seen in counts if seen.strip() == line)


@server.tool()
def count(key: str) -> int:
    """Count a call for key, and say how many there were."""
    return _log(f"count {key}")


@server.tool()
def charge(order: str, cents: int) -> str:
    """Charge an order (must not run twice)."""
    _log(f"charge {order} {cents}")
    return f"receipt for {order}: {cents} cents"


@server.tool()
def slow(seconds: float) -> str:
    """Take a while (no time at all where ``$MCP_SLOW`` is ``0``)."""
    _log("slow started")
    time.sleep(seconds if os.environ.get("MCP_SLOW") != "0" else 0)
    return "slow done"


@server.tool()
def fail() -> str:
    """Always fails."""
    raise ValueError("this tool always fails")


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
