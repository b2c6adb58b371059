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

from ..actors import Backoff, ChildSpec, Reply, Restart, RetryPolicy
from ..errors import InvalidInputError
from ..store import Store
from ._messages import ModelSettings, ToolSpec, Usage
from ._model import Model, model_from
from ._stop import NoToolCalls, StopCondition
from ._tools import Tool

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("promissory.agents")

__all__ = ["Agent", "AgentTool", "Prices", "RunContext", "RunHandle", "RunResult"]

_registry: dict[str, Agent] = {}
_registry_lock = threading.Lock()


def registered(name: str) -> Agent:
    """The agent registered under ``name`` (agents register when they are made)."""
    agent = _registry.get(name)
    if agent is None:
        raise LookupError(
            f"no agent named {name!r} is defined in this process; import the module that "
            "defines it before starting the runtime"
        )
    return agent


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


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """A finished run, as kept in its promise's value.

    Attributes:
        output: the answer (text, or the ``output_type`` value as JSON).
        usage: tokens and cost, its sub-agents' included.
        turns: model calls made.
        stop: why it stopped (``final_answer``, ``max_turns``, ``tool:NAME``…).

    """

    output: Any
    usage: Usage
    turns: int
    stop: str


class RunTask(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The message that starts a run: which agent, its input, and (when it continues a
    canceled or timed-out run) that run's id.
    """

    agent: str
    input: Any
    resume: str | None = None


DEFAULT_MODEL_RETRY = RetryPolicy(max_attempts=4, initial_interval=1.0, max_interval=30.0)


class Agent:
    """A durable agent loop, reshaped by its prompt, model, tools and stop condition.

    Args:
        name: unique in the process; runs find their agent by it after a restart.
        instructions: the system prompt, or a function of the ``RunContext``.
        model: a ``Model`` or a string such as ``"openai:gpt-4o-mini"``.
        tools: functions, ``Tool``s, other agents (as sub-agents with the default policy),
            or other agents' ``as_tool(...)`` (to set the sub-agent's restart policy).
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
        tools: Sequence[Callable[..., Any] | Tool | AgentTool | Agent] = (),
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
        self.tools: dict[str, Tool | AgentTool] = {}
        for t in tools:
            if isinstance(t, Agent):
                item: Tool | AgentTool = t.as_tool()  # with the default policy
            elif isinstance(t, Tool | AgentTool):
                item = t
            elif callable(t):
                item = Tool(t)
            else:
                raise InvalidInputError(
                    f"agent {name}: a tool must be a function, a Tool, an Agent or an agent's "
                    f"as_tool(), not {t!r}"
                )
            if item.name in self.tools:
                raise InvalidInputError(f"agent {name} has two tools named {item.name!r}")
            self.tools[item.name] = item
        self.stop = stop or NoToolCalls()
        self.output_type = output_type
        self.output_retries = output_retries
        self.retry = retry or DEFAULT_MODEL_RETRY
        self.max_concurrency = max(1, max_concurrency)
        self.settings = settings or ModelSettings()
        self.prices = prices
        with _registry_lock:
            if name in _registry and _registry[name] is not self:
                log.debug("agent %s redefined; the newest definition is used", name)
            _registry[name] = self

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

        Args:
            restart: the child's restart type (``transient`` by default: restarted after a
                crash, not after finishing).
            backoff: wait between restarts.
            intensity: restarts allowed within ``period`` seconds before it is given up.
            raise_errors: a failure raises ``ChildFailed`` in the parent's loop (its handler)
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
    ) -> RunHandle:
        """Start a run on ``rt`` and return its handle (``rt.start`` calls this).

        ``deadline`` (seconds, ``timedelta`` or ``datetime``) bounds the whole run, its
        sub-agents and tools included: past it, the run times out (``rejected_timedout``).
        """
        from ._loop import AgentRun

        run_id = id or f"runs/{self.name}/{uuid.uuid4().hex[:12]}"
        assert rt.store is not None
        if rt.store.find(run_id) is not None:
            # The run exists (the id is its idempotency key): wait on it; never revive it.
            return RunHandle(run_id, rt.store)
        ref = rt.spawn(AgentRun, id=run_id, spec=ChildSpec(restart=Restart.TEMPORARY))
        task = RunTask(agent=self.name, input=input, resume=resume)
        reply = ref.ask(task, id=run_id, timeout=deadline)
        assert rt.store is not None
        return RunHandle(reply.id, rt.store)


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

    def __init__(self, id: str, store: Store) -> None:
        self.id = id
        self._reply: Reply[Any] = Reply(id, store, RunResult)

    def details(self, timeout: float | None = None) -> RunResult:
        """The finished run: output, usage, turns, stop reason. Waits for it."""
        result: RunResult = self._reply.get(timeout)
        return result

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
        details: RunResult = await self._reply
        return details.output

    def __repr__(self) -> str:
        return f"RunHandle({self.id!r})"
