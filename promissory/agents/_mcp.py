"""Tools from MCP servers (the ``mcp`` package, the ``mcp`` extra): stdio and streamable HTTP.

``mcp_server("python -m my_server")`` (or ``mcp_server("http://host/mcp")``) attaches a
server's tools to an agent as its functions are attached. A run lists the server's tools once,
as a kept step (``mcp:list:<server>``), so a replay (after a crash, a fork, a resume) sees the
same tools whether or not the server lists the same today; each call is a kept step of its
own (``tool:<name>``), with the tool's retry policy, timeout and effect class, as a function
tool's. A server that cannot be reached fails the calls made to it, each becoming an error
result for the model that names the server; the run goes on.

One connection per server and event loop, opened at the first use and kept: a task of its own
holds the client open (``anyio`` wants a client closed by the task that opened it) and serves
the calls one at a time; a connection that breaks is given up and the next call opens another.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..actors import RetryPolicy
from ..errors import InvalidInputError, MCPServerError
from ._chat import ToolSpec
from ._tools import Effect, Tool

__all__ = ["MCPServer", "MCPTool", "list_server_tools", "mcp_server"]

Operation = Callable[[Any], Awaitable[Any]]


class MCPServer:
    """An MCP server whose tools an agent has (see the module docstring; ``mcp_server``).

    Attributes:
        name: the server's name in step names (``mcp:list:<name>``) and errors.
        target: the command line (stdio) or the URL (streamable HTTP).
        effects: each tool's effect class, by tool name (others: ``effect``).
        retry: how a failing call is retried (default: not at all).
        timeout: seconds one call may take.

    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        effect: Effect | str = Effect.SAFE,
        effects: Mapping[str, Effect | str] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        if isinstance(target, str):
            if not target.strip():
                raise InvalidInputError("an MCP server is a command line or a URL, not ''")
            self.url = target if target.startswith(("http://", "https://")) else None
            argv = [] if self.url else shlex.split(target)
        else:
            argv, self.url = [str(a) for a in target], None
            if not argv:
                raise InvalidInputError("an MCP server's command line is empty")
        self.argv = argv
        self.target = self.url or shlex.join(argv)
        self.name = name or _name_for(self.url, argv)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.name):
            raise InvalidInputError(
                f"an MCP server's name is 1-64 letters, digits, '.', '_' or '-', not {self.name!r}"
            )
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        try:
            self.effect = Effect(effect)
            self.effects = {k: Effect(v) for k, v in (effects or {}).items()}
        except ValueError as exc:
            raise InvalidInputError(
                f"MCP server {self.name}: an effect is one of "
                f"{', '.join(e.value for e in Effect)}: {exc}"
            ) from None
        self.retry = retry
        self.timeout = timeout
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Session] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"mcp_server({self.target!r}, name={self.name!r})"

    # -- what the agent loop uses ------------------------------------------------------------

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools, as the model is told of them (``mcp:list`` steps call this)."""
        result = await self._request(lambda client: client.list_tools())
        return [
            ToolSpec(t.name, t.description or t.title or t.name, dict(t.input_schema or {}))
            for t in result.tools
        ]

    def tools(self, specs: list[ToolSpec]) -> list[MCPTool]:
        """The tools of a kept listing, ready to be called."""
        return [MCPTool(self, spec) for spec in specs]

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool``: its structured result if it gives one, else its text.

        Raises:
            MCPServerError: the server could not be reached, or the call failed there.

        """
        result = await self._request(lambda client: client.call_tool(tool, arguments))
        text = "\n".join(
            str(block.text) for block in result.content if getattr(block, "text", None) is not None
        )
        if result.is_error:
            raise MCPServerError(
                f"MCP server {self.name}: tool {tool} failed: {text or 'no detail given'}"
            )
        structured = result.structured_content
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]  # a plain value, wrapped by the server
        return structured if structured is not None else text

    async def _request(self, operation: Operation) -> Any:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = self._sessions[loop] = _Session(self)
        return await session.request(operation)

    def client(self) -> Any:
        """A new ``mcp.Client`` for this server (not yet connected)."""
        try:
            import mcp
        except ImportError as exc:
            raise MCPServerError(
                "MCP tools need the mcp package: pip install 'promissory[mcp]'"
            ) from exc
        if self.url is not None:
            return mcp.Client(self.url, read_timeout_seconds=self.timeout)
        params = mcp.StdioServerParameters(
            command=self.argv[0],
            args=self.argv[1:],
            env={**os.environ, **self.env} if self.env is not None else dict(os.environ),
            cwd=self.cwd,
        )
        return mcp.Client(params, read_timeout_seconds=self.timeout)


class MCPTool(Tool):
    """One tool of an MCP server, called as a step like a function tool."""

    def __init__(self, server: MCPServer, spec: ToolSpec) -> None:
        self.server = server
        self.name = spec.name
        self.description = spec.description
        self.parameters = spec.parameters
        self.retry = server.retry
        self.timeout = server.timeout
        self.effect = server.effects.get(spec.name, server.effect)
        self.durable = False
        self.returns = Any
        self.args_type = None
        name = spec.name

        async def call(**arguments: Any) -> Any:
            return await server.call(name, arguments)

        call.__qualname__ = f"mcp:{server.name}:{name}"
        self.fn = call

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments as they are (the server checks them against its schema)."""
        return dict(arguments)

    def __repr__(self) -> str:
        return f"MCPTool({self.name!r} of {self.server.name})"


class _Session:
    """One connection to a server on one event loop, served by a task of its own."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.closed = False
        self._queue: asyncio.Queue[tuple[asyncio.Future[Any], Operation]] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def request(self, operation: Operation) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((future, operation))
        return await future

    async def _serve(self) -> None:
        current: asyncio.Future[Any] | None = None
        try:
            async with self.server.client() as client:
                while True:
                    current, operation = await self._queue.get()
                    if current.done():
                        continue
                    result = await operation(client)
                    if not current.done():
                        current.set_result(result)
                    current = None
        except BaseException as exc:
            self.closed = True
            error = self._error(exc)
            waiting = [current] if current is not None else []
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait()[0])
            for future in waiting:
                if not future.done():
                    future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise

    def _error(self, exc: BaseException) -> MCPServerError:
        inner = exc
        while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            inner = inner.exceptions[0]
        if isinstance(inner, MCPServerError):
            return inner
        return MCPServerError(
            f"MCP server {self.server.name} ({self.server.target}) could not be reached or "
            f"broke off: {type(inner).__name__}: {inner}"
        )


def mcp_server(
    target: str | Sequence[str],
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    effect: Effect | str = Effect.SAFE,
    effects: Mapping[str, Effect | str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float = 60.0,
) -> MCPServer:
    """The tools of an MCP server, for an agent's ``tools``.

    ``target`` is a command line (run as a child process, spoken to on stdio; its environment
    is this process's, plus ``env``) or an ``http(s)://`` URL (streamable HTTP). ``effects``
    gives a tool's effect class by its name (``at_most_once`` for one that must not run twice:
    the crash-test harness kills inside it), ``effect`` the others'.

    Example:
        >>> files = mcp_server("npx -y @modelcontextprotocol/server-filesystem /tmp")
        >>> agent = Agent("clerk", "File things.", model="openai:gpt-4o-mini", tools=[files])

    Raises:
        InvalidInputError: an empty command, a bad name or effect class.

    """
    return MCPServer(
        target,
        name=name,
        env=env,
        cwd=cwd,
        effect=effect,
        effects=effects,
        retry=retry,
        timeout=timeout,
    )


def _name_for(url: str | None, argv: list[str]) -> str:
    if url is not None:
        host = url.split("://", 1)[1].split("/", 1)[0]
        return re.sub(r"[^A-Za-z0-9_.-]", "-", host)[:64] or "mcp"
    # The program, or what a launcher (python -m, npx, uvx…) runs: its first word.
    words = [a for a in argv[1:] if not a.startswith("-")]
    launcher = os.path.basename(argv[0]).rstrip("0123456789.") in _LAUNCHERS
    chosen = os.path.basename(words[0] if launcher and words else argv[0])
    return re.sub(r"[^A-Za-z0-9_.-]", "-", chosen)[:64] or "mcp"


_LAUNCHERS = {"python", "npx", "uvx", "uv", "node", "bunx", "deno", "pipx"}


async def list_server_tools(server: MCPServer) -> list[ToolSpec]:
    """A step's function: ``server``'s tools (kept, so a replay sees the same ones)."""
    return await server.list_tools()
