"""``Agent``: the four things a user changes (prompt, model, tools, stop), and running it.

An agent is a definition, registered by name when it is made; every run of it is an actor of
its own (``AgentRun``) whose one message is the task, with id the run's id. So the run's
promise is ``SELECT * FROM promises WHERE id = 'agent/run/42'`` and its steps (model calls,
tool calls, sub-agent calls, approvals) are the promises under that id, in order.

Example:
    >>> researcher = Agent("researcher", "Find facts.", model="openai:gpt-4o-mini", tools=[search])
    >>> lead = Agent("lead", "Plan, delegate, write.", model=model,
    ...              tools=[researcher.as_tool(restart="transient", intensity=2)])
    >>> with Runtime() as rt:  # doctest: +SKIP
    ...     answer = rt.run(lead, "Compare X and Y", id="agent/run/42")

"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .. import _tracing
from ..actors import Backoff, ChildSpec, Reply, Restart, RetryPolicy
from ..errors import AgentNotFoundError, InvalidDefinitionError, InvalidInputError
from ..store import Promise, Store, decode, encode
from ._chat import Message, ModelRequest, ModelSettings, ToolSpec, Usage
from ._early import EarlyCall, early_start, offer
from ._mcp import MCPServer
from ._model import Model, model_from
from ._stop import NoToolCalls, StopCondition
from ._stream import RunStream
from ._tools import Tool, content_of

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("promissory.agents")

__all__ = [
    "Agent",
    "AgentTool",
    "ForkPoint",
    "Prices",
    "RunContext",
    "RunHandle",
    "RunResult",
]

_registry: dict[str, Agent] = {}
_registry_lock = threading.Lock()
_on_define: list[Callable[[Agent], object]] = []
"""Called with each agent as it is defined (the loop makes its run type hostable)."""
_run_types: dict[str, type[Any]] = {}
"""Each defined agent's run type (the actor its runs are), by agent name. The loop makes it
when the agent is defined (``_on_define``) and keeps it here for ``Agent.start``: the loop
imports this module, never the other way round."""


def registered(name: str) -> Agent:
    """The agent registered under ``name`` (agents register when they are made)."""
    agent = _registry.get(name)
    if agent is None:
        raise AgentNotFoundError(
            f"no agent named {name!r} is defined in this process; import the module that "
            "defines it before starting the runtime"
        )
    return agent


def defined_agents() -> list[Agent]:
    """Every agent defined (registered) in this process so far."""
    with _registry_lock:
        return list(_registry.values())


class Prices(msgspec.Struct, frozen=True, kw_only=True):
    """Dollars per million tokens, to turn usage into cost."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs."""
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / 1_000_000


class RunContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a dynamic ``instructions`` function is given."""

    run_id: str
    agent: str
    input: Any
    turn: int


class RunResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A finished run, as kept in its promise's value.

    Attributes:
        output: the answer (text, or the ``output_type`` value as JSON).
        usage: tokens and cost, its sub-agents' included.
        turns: model calls made.
        stop: why it stopped (``final_answer``, ``max_turns``, ``tool:NAME``…).
        reused: the run existed already when it was started (its id is its idempotency
            key), so this is its kept outcome and nothing ran again; ``Store.forget`` (or
            ``promissory forget ID``) lets the id run anew. Never stored: it says how this
            call came by the result.

    """

    output: Any
    usage: Usage
    turns: int
    stop: str
    reused: bool = False


class ForkPoint(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where a forked run comes from, and what it changes (``Runtime.fork``).

    Attributes:
        source: the run forked.
        at: the position (1-based) of the first of its steps the fork does not reuse: the
            steps before it are read from the source's journal, this one and the rest run anew.
        prompt: the system prompt the fork runs with, if changed.
        model: the name of the model the fork runs with, if changed.
        tools: the names of the tools the fork has, if changed.

    """

    source: str
    at: int
    prompt: str | None = None
    model: str | None = None
    tools: list[str] | None = None


class RunTask(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The message that starts a run: which agent, its input, (when it continues a canceled
    or timed-out run) that run's id, (for a top-level run) the name of the model it was
    started with, ``param->>'model'`` in SQL, and (for a fork) where it was forked from.
    """

    agent: str
    input: Any
    resume: str | None = None
    model: str | None = None
    fork: ForkPoint | None = None


DEFAULT_MODEL_RETRY = RetryPolicy(max_attempts=4, initial_interval=1.0, max_interval=30.0)


class Agent:
    """A durable agent loop, reshaped by its prompt, model, tools and stop condition.

    Args:
        name: unique in the process; runs find their agent by it after a restart.
        instructions: the system prompt, or a function of the ``RunContext``.
        model: a ``Model`` or a string such as ``"openai:gpt-4o-mini"``.
        tools: functions, ``Tool``s, other agents (as sub-agents with the default policy),
            other agents' ``as_tool(...)`` (to set the sub-agent's restart policy), or MCP
            servers (``mcp_server(...)``: all their tools).
        stop: when the loop ends (default: the model answers without calling a tool).
        output_type: a msgspec Struct (or any msgspec type) the final answer must decode to;
            an invalid answer is sent back to the model to correct, ``output_retries`` times.
        retry: how a failed model call is retried (default: 4 attempts, backoff from 1 s).
        max_concurrency: tool calls of one turn run at most this many at a time.
        settings: per-request settings for the model.
        prices: to compute cost from usage.

    """

    def __init__(
        self,
        name: str,
        instructions: str | Callable[[RunContext], str],
        model: Model | str,
        tools: Sequence[Callable[..., Any] | Tool | AgentTool | Agent | MCPServer] = (),
        *,
        stop: StopCondition | None = None,
        output_type: Any = None,
        output_retries: int = 2,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 4,
        settings: ModelSettings | None = None,
        prices: Prices | None = None,
    ) -> None:
        if not name or "/" in name:
            raise InvalidInputError(f"an agent name must be non-empty, without '/': {name!r}")
        self.name = name
        self.instructions = instructions
        self.model: Model = model_from(model)
        self.toolsets: list[MCPServer] = [t for t in tools if isinstance(t, MCPServer)]
        """MCP servers whose tools the agent has (listed by each run, as a kept step)."""
        self.tools: dict[str, Tool | AgentTool] = tool_items(
            name, [t for t in tools if not isinstance(t, MCPServer)]
        )
        self.stop = stop or NoToolCalls()
        self.output_type = output_type
        self.output_retries = output_retries
        self.retry = retry or DEFAULT_MODEL_RETRY
        self.max_concurrency = max(1, max_concurrency)
        self.settings = settings or ModelSettings()
        self.prices = prices
        with _registry_lock:
            if name in _registry and _registry[name] is not self:
                # Runs find their agent by name (after a restart too): the older definition
                # is no longer reachable, which is a mistake unless it is on purpose.
                log.warning(
                    "agent %r defined again: runs started or resumed from now on use the newest "
                    "definition (give each agent a name of its own)",
                    name,
                )
            _registry[name] = self
        for hook in _on_define:
            hook(self)

    @property
    def type_name(self) -> str:
        """The actor type its runs are kept under (``agent:<name>``): a node hosts this
        agent's runs if the agent is defined in its process (``Runtime(hosts=[agent])``).
        """
        return f"agent:{self.name}"

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, model={self.model.name!r})"

    def system_prompt(self, context: RunContext) -> str:
        """The system prompt for one turn."""
        text = self.instructions(context) if callable(self.instructions) else self.instructions
        if self.output_type is not None:
            schema = msgspec.json.encode(msgspec.json.schema(self.output_type)).decode()
            text += "\n\nGive your final answer as JSON only, matching this JSON schema:\n" + schema
        return text

    def tool_specs(self) -> list[ToolSpec]:
        """The tools as the model is told of them."""
        return [t.spec() for t in self.tools.values()]

    def request(
        self, context: RunContext, messages: list[Message], more_tools: Sequence[ToolSpec] = ()
    ) -> ModelRequest:
        """What the model is asked at one turn: the system prompt for ``context``, the
        transcript ``messages``, the agent's tools and ``more_tools`` (an MCP server's).
        """
        return ModelRequest(
            system=self.system_prompt(context),
            messages=list(messages),
            tools=self.tool_specs() + list(more_tools),
            output_schema=(
                msgspec.json.schema(self.output_type) if self.output_type is not None else None
            ),
            settings=self.settings,
        )

    def as_tool(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        restart: Restart | str = Restart.TRANSIENT,
        backoff: Backoff | None = None,
        intensity: int = 1,
        period: float = 5.0,
        shutdown: float | None = 5.0,
        raise_errors: bool = False,
    ) -> AgentTool:
        """Attach this agent to another as a tool: each call runs as a supervised child actor.

        Example:
            >>> lead = Agent("lead", "Plan and delegate.", model, tools=[
            ...     researcher.as_tool(name="research", description="Find sources on a topic.",
            ...                        restart="transient", intensity=2)])  # doctest: +SKIP

        Args:
            name: the tool's name as the model sees it and calls it (default: the agent's
                name). A call by any other name gets an error result that lists the tools.
            description: what the model is told the tool does (default: "Ask the <name>
                agent." and the agent's instructions).
            restart: the child's restart type (``transient`` by default: restarted after a
                crash, not after finishing).
            backoff: wait between restarts.
            intensity: restarts allowed within ``period`` seconds before it is given up.
            raise_errors: a failure raises ``ChildFailedError`` in the parent's loop (its handler)
                instead of coming back to the model as an error result.

        """
        spec = ChildSpec(
            restart=Restart(restart),
            backoff=backoff,
            intensity=intensity,
            period=period,
            shutdown=shutdown,
        )
        return AgentTool(self, name or self.name, description, spec, raise_errors)

    def start(
        self,
        rt: Runtime,
        input: Any,
        *,
        id: str | None = None,
        deadline: Any = None,
        resume: str | None = None,
        fork: ForkPoint | None = None,
    ) -> RunHandle:
        """Start a run on ``rt`` and return its handle (``rt.start`` calls this).

        ``deadline`` (seconds, ``timedelta`` or ``datetime``) bounds the whole run, its
        sub-agents and tools included: past it, the run times out (``rejected_timedout``).
        An ``id`` that exists already is not run again: the handle joins the run (still under
        way) or returns its kept outcome (finished), ``reused`` is set on it and on its
        ``RunResult``, and a line says so (INFO, logger ``promissory.agents``). The model's
        name is kept with the run (``RunTask.model``). ``fork`` makes the run a fork
        (``Runtime.fork`` builds it).
        """
        run_type = _run_types.get(self.name)
        if run_type is None:  # made by promissory.agents._loop, which the package imports
            raise InvalidDefinitionError(
                f"agent {self.name!r} has no run type: import promissory.agents"
            )
        run_id = id or f"runs/{self.name}/{uuid.uuid4().hex[:12]}"
        assert rt.store is not None
        fresh = resume is None and fork is None
        early = fresh and not self.toolsets and early_start(self.model)
        if id is not None and _tracing.tracing_enabled():
            # Traced, a run that exists is looked up first: sending it its task again (a
            # write that finds it) would leave a send span in a trace of its own.
            existing = rt.store.find(run_id)
            if existing is not None:
                _say_reused(existing)
                return RunHandle(run_id, rt.store, reused=True)
        # A run that continues another continues its trace too.
        earlier = rt.store.get(resume).tags if resume and _tracing.tracing_enabled() else None
        with _tracing.continuing(earlier):
            model = fork.model if fork is not None and fork.model else self.model.name
            task = RunTask(agent=self.name, input=input, resume=resume, model=model, fork=fork)
            call = None
            if early:
                # The first turn is asked while the run's commit is on its way, if this node
                # is to run it (at once for an id made up here, else once the statement says
                # the run is new); its handler reads the answer (``_early``).
                # The task as its handler will have it (a Struct input is a dict there).
                kept = task if isinstance(input, str) else decode(encode(task).encode(), RunTask)
                first = RunContext(run_id=run_id, agent=self.name, input=kept.input, turn=1)
                try:
                    request = self.request(first, [task_message(kept.input)])
                except Exception:
                    request = None  # the run's first step fails with it, where it is kept
                if request is not None:
                    call = EarlyCall(rt.loop, self, run_id, kept, request)
                    offer(rt.store, call)
            # The run's actor, its task and this node's claim on it: one commit, and its
            # activation starts the task with no write or read of its own.
            # A run that exists (the id is its idempotency key) is joined, never revived: its
            # task is there already, so nothing is written.
            try:
                reply = rt.spawn_ask(
                    run_type,
                    task,
                    id=run_id,
                    message_id=run_id,
                    spec=ChildSpec(restart=Restart.TEMPORARY),
                    timeout=deadline,
                    revive=False,
                    written=call.begin if call is not None else None,
                    # A run id made up here is no run's yet: the model is asked at once.
                    new=id is None,
                )
            except BaseException:
                if call is not None:
                    call.cut()
                raise
        if not reply.written:
            if call is not None:
                call.cut()
            _say_reused(reply.promise())
            return RunHandle(run_id, rt.store, reused=True)
        if call is not None and not call.begun:
            call.cut()  # another node runs it
        return RunHandle(reply.id, rt.store, reply=reply)


def task_message(input: Any) -> Message:
    """A run's input as the first message of its transcript."""
    return Message.user(input if isinstance(input, str) else content_of(input))


def tool_items(
    agent: str, tools: Sequence[Callable[..., Any] | Tool | AgentTool | Agent]
) -> dict[str, Tool | AgentTool]:
    """An agent's tools by name, each made a ``Tool`` or an ``AgentTool``.

    Raises:
        InvalidInputError: an item is not a tool, or two have one name.

    """
    items: dict[str, Tool | AgentTool] = {}
    for t in tools:
        if isinstance(t, Agent):
            item: Tool | AgentTool = t.as_tool()  # with the default policy
        elif isinstance(t, Tool | AgentTool):
            item = t
        elif callable(t):
            item = Tool(t)
        else:
            raise InvalidInputError(
                f"agent {agent}: a tool must be a function, a Tool, an Agent or an agent's "
                f"as_tool(), not {t!r}"
            )
        if item.name in items:
            raise InvalidInputError(f"agent {agent} has two tools named {item.name!r}")
        items[item.name] = item
    return items


def _say_reused(run: Promise) -> None:
    """Log that starting ``run`` found it there already, and what that means."""
    if run.state.settled:
        log.info(
            "run %s exists already (%s): its kept outcome is returned and nothing runs again; "
            "to run this id anew, forget it first (promissory forget %s, or Store.forget)",
            run.id,
            run.state.value,
            run.id,
        )
    else:
        log.info("run %s exists already and is under way: joining it", run.id)


class AgentTool:
    """An agent attached to another as a tool, with its own supervision policy."""

    def __init__(
        self,
        agent: Agent,
        name: str,
        description: str | None,
        child_spec: ChildSpec,
        raise_errors: bool,
    ) -> None:
        self.agent = agent
        self.name = name
        self.description = (
            description
            or (
                f"Ask the {agent.name} agent. "
                + (agent.instructions if isinstance(agent.instructions, str) else "")
            ).strip()
        )
        self.child_spec = child_spec
        self.raise_errors = raise_errors
        self.parameters = {
            "type": "object",
            "properties": {"input": {"type": "string", "description": "the task for the agent"}},
            "required": ["input"],
        }

    def spec(self) -> ToolSpec:
        """The tool as the model is told of it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def __repr__(self) -> str:
        return f"AgentTool({self.agent.name!r} as {self.name!r})"


class RunHandle:
    """A run in progress (or done): wait for it here, later, or from another process.

    Example:
        >>> handle = rt.start(lead, "Compare X and Y", id="agent/run/43")  # doctest: +SKIP
        >>> RunHandle("agent/run/43", store).result(timeout=600)  # doctest: +SKIP

    """

    def __init__(
        self, id: str, store: Store, *, reused: bool = False, reply: Reply[Any] | None = None
    ) -> None:
        self.id = id
        self.reused = reused
        """Whether the run existed already when it was started (see ``RunResult.reused``)."""
        # The reply of the send that started the run, when this process started it: its end
        # is caught as it is written here, with no read. One thread at a time waits on it (a
        # reply's wait is not shared); another waits on a reply of its own.
        self._reply: Reply[Any] = reply if reply is not None else Reply(id, store, RunResult)
        # The task as written, when this process started the run just now: a stream of it
        # gives its start with no read.
        self._task = reply.sent if reply is not None and reply.written else None
        self._waiting = threading.Lock()
        self._store = store

    def stream(self, *, poll: float = 1.0) -> RunStream:
        """The run's events, from its first kept one, then live, until it ends: text as the
        model writes it, the model's answers, tool calls starting and finishing, sub-agents'
        events (their run ids are under this one's), and ``RunEnded`` last. A stream opened
        late, after a crash, or in another process replays what was kept, each once, then
        goes on live (see ``RunStream``). Iterate it, or ``async for`` it.

        Example:
            >>> for event in rt.start(writer, "A haiku").stream():  # doctest: +SKIP
            ...     if isinstance(event, TextDelta):
            ...         print(event.text, end="", flush=True)

        """
        return RunStream(self._store, self.id, poll=poll, started=self._task)

    def details(self, timeout: float | None = None) -> RunResult:
        """The finished run: output, usage, turns, stop reason, reuse. Waits for it."""
        if self._waiting.acquire(blocking=False):
            try:
                result: RunResult = self._reply.get(timeout, type=RunResult)
            finally:
                self._waiting.release()
        else:
            result = Reply(self.id, self._store, RunResult).get(timeout)
        return msgspec.structs.replace(result, reused=True) if self.reused else result

    def result(self, timeout: float | None = None, *, type: Any = None) -> Any:
        """The run's output (decoded as ``type`` when given). Waits for it."""
        output = self.details(timeout).output
        return msgspec.convert(output, type) if type is not None else output

    def done(self) -> bool:
        """Whether the run has ended."""
        return self._reply.done()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._result_async().__await__()

    async def _result_async(self) -> Any:
        details: RunResult = await Reply(self.id, self._store, RunResult)
        return details.output

    def __repr__(self) -> str:
        return f"RunHandle({self.id!r})"
