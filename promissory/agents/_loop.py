"""The agent loop as a durable handler: model step, tool steps, repeat until a stop condition.

Each model call is a step whose value is the model's answer (the transcript's delta, not the
whole history again), kept before any tool it asked for runs; its fingerprint hashes the whole
request (messages and tools), so a changed prompt or transcript on replay raises the
non-determinism error instead of mixing transcripts. The tool calls of one turn run in chunks
of ``max_concurrency``: sub-agents start as child actors, function tools run as parallel steps,
durable tools run in the handler; results go back to the model in its own order. Failures of a
tool (after its retries), an unknown tool, or bad arguments become error results for the model.
"""

from __future__ import annotations

import logging
import types
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from .. import _tracing
from ..actors import (
    Canceled,
    Context,
    DurableActor,
    DurablePromise,
    EndOfJournal,
    Exit,
    StepCall,
    StepOutcome,
    Suspend,
    current_step,
    handler,
)
from ..errors import (
    ChildCanceledError,
    ChildFailedError,
    FencedError,
    InvalidInputError,
    MCPServerError,
    ModelError,
    NondeterminismError,
    OutputInvalidError,
)
from ..store import PromiseState
from . import _observe
from ._agent import (
    Agent,
    AgentTool,
    ForkPoint,
    RunContext,
    RunHandle,
    RunResult,
    RunTask,
    _on_define,
    _run_types,
    registered,
    task_message,
)
from ._chat import Message, ModelRequest, ModelResponse, ToolCall, ToolResult, ToolSpec, Usage
from ._early import EarlyCall, take as take_early
from ._fork import agent_for, start_fork
from ._mcp import MCPTool, list_server_tools
from ._model import Model
from ._stop import RunView
from ._stream import Announcer, announcer_for
from ._tools import Tool, content_of

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["AgentRun"]

log = logging.getLogger("promissory.agents")


async def _complete(model: Model, request: ModelRequest) -> ModelResponse:
    step = current_step()
    sid = step.id if step is not None else None
    _observe.model_asked(sid, model, request)
    response = await model.complete(request)
    _observe.model_answered(sid, response)
    return response


async def _complete_live(
    announcer: Announcer,
    run: str,
    early: EarlyCall | None,
    model: Model,
    request: ModelRequest,
) -> ModelResponse:
    """``_complete``, streamed when the model streams: its text is announced as it comes,
    under a token of this call (a call made again is told apart), and the answer kept whole.
    ``early``: this call, made already while the run was being kept (read by the first
    attempt only; a retry asks the model anew).
    """
    stream = getattr(model, "stream", None)
    step = current_step()
    if stream is None or step is None:
        return await _complete(model, request)
    _observe.model_asked(step.id, model, request)
    token = uuid.uuid4().hex[:8]
    response: ModelResponse | None = None
    offset = 0
    items = early.stream() if early is not None and early.read(step.id) else stream(request)
    async for item in items:
        if isinstance(item, ModelResponse):
            response = item
        else:
            announcer.delta(run, step.id, token, item, offset)
            offset += len(item)
    if response is None:
        raise ModelError(
            f"{model.name}: the stream ended without the whole answer", "malformed_output", True
        )
    _observe.model_answered(step.id, response)
    return response


class AgentRun(DurableActor[None]):
    """The actor of one agent run: its one message is the task; its reply, the result."""

    @handler
    def run(self, ctx: Context, task: RunTask) -> RunResult:
        """Run the agent's loop to a stop; the run's actor ends with it (and its sub-agents)."""
        agent = agent_for(task)
        if task.model is not None and task.model != agent.model.name:
            _warn_model_changed(ctx.message_id, task.model, agent)
        _observe.run_began(ctx, task.agent, task.resume)
        announcer_for(ctx.store).started(ctx.message_id, task.agent, task.input)
        loop = _Loop(ctx, agent, task)
        try:
            result = loop.run()
        except Canceled as exc:
            # Canceled or past its deadline: answer every tool call of the turn in flight (as
            # an error), so the transcript is whole, then end as a shutdown.
            loop.close_turn()
            ctx.stop(Exit.SHUTDOWN)
            _observe.run_ended(ctx, task.agent, "timed out" if exc.deadline else "canceled")
            raise
        except Suspend as exc:
            _observe.run_waits(ctx, task.agent, list(exc.awaiting))
            raise
        except FencedError:
            raise  # a newer incarnation holds the run: nothing to say for this one
        except Exception as exc:
            _observe.run_ended(ctx, task.agent, "failed", exc)
            raise
        ctx.stop()
        _observe.run_finished(ctx, task.agent, result)
        return result

    @classmethod
    def launch(cls, rt: Runtime, input: Any, *, id: str) -> RunHandle:
        """Start a run of this type's agent with id ``id`` (a schedule's firing); a run
        that exists is joined, not started again (``Agent.start``).
        """
        return registered(cls.kind().removeprefix("agent:")).start(rt, input, id=id)

    @classmethod
    def fork(
        cls,
        rt: Runtime,
        run_id: str,
        *,
        at_step: int | str,
        prompt: str | None = None,
        model: Any = None,
        tools: Any = None,
        id: str | None = None,
    ) -> RunHandle:
        """Start a new run from run ``run_id``'s kept steps before ``at_step``, with the
        changes given (``Runtime.fork`` calls this; see ``start_fork``).
        """
        return start_fork(
            rt, run_id, at_step=at_step, prompt=prompt, model=model, tools=tools, id=id
        )

    @classmethod
    def resume(cls, rt: Runtime, run_id: str) -> RunHandle:
        """Continue a canceled or timed-out run from its last whole turn, as a new run.

        The new run's id is ``{run_id}~resume{n}``; its transcript up to that turn is the old
        run's, rebuilt from the old run's kept steps without calling anything. Resuming is
        idempotent: while the latest continuation runs, or once it has finished, resuming
        again joins it (its handle is returned) and starts nothing; only a continuation that
        was itself canceled or timed out is continued, by the next one.

        The continuation runs on the agent's model as it is defined now. When that is not the
        model the run was started with (``RunTask.model``), it says so, at WARNING, naming
        both, and goes on: the agent is defined in code, and changing its model between a
        cancel and a resume may be the point.
        """
        store = rt.store
        assert store is not None
        task = store.get(run_id).param_as(RunTask)
        n, source = 1, run_id
        while (latest := store.find(f"{run_id}~resume{n}")) is not None:
            if not latest.state.settled or latest.state is PromiseState.RESOLVED:
                log.info("run %s is resumed already, by %s: joining it", run_id, latest.id)
                return RunHandle(latest.id, store, reused=True)
            n, source = n + 1, latest.id
            task = latest.param_as(RunTask)
        agent = registered(task.agent)
        if task.model is not None and task.model != agent.model.name:
            log.warning(
                "run %s was started with model %s; it is resumed with model %s, agent %s's "
                "model now",
                run_id,
                task.model,
                agent.model.name,
                agent.name,
            )
        return agent.start(rt, task.input, id=f"{run_id}~resume{n}", resume=source)


_warned: dict[str, None] = {}
"""Runs told to have changed model in this process (each is told once)."""


def _warn_model_changed(run_id: str, started_with: str, agent: Agent) -> None:
    """Say, once per run and process, that a run goes on with another model than it began."""
    if run_id in _warned:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned[run_id] = None
    log.warning(
        "run %s was started with model %s and goes on with model %s, agent %s's model now",
        run_id,
        started_with,
        agent.model.name,
        agent.name,
    )


class _Loop:
    def __init__(self, ctx: Context, agent: Agent, task: RunTask, dry: bool = False) -> None:
        self.ctx = ctx
        self.agent = agent
        self.task = task
        self.dry = dry
        self.messages: list[Message] = [task_message(task.input)]
        self.usage = Usage()
        self.turns = 0
        self.corrections = 0
        self.open_calls: list[ToolCall] = []
        """The tool calls of the turn in flight."""
        self.turn_results: list[ToolResult | None] = []
        """Their results so far, in the model's order (``None``: not yet)."""
        self.checkpoint: tuple[int, Usage, int] = (1, Usage(), 0)
        """(messages, usage, turns) at the end of the last whole turn."""
        self.last: ModelResponse | None = None
        """The model's latest answer."""
        self.server_tools: dict[str, MCPTool] = {}
        """The tools of the agent's MCP servers, as this run listed them."""
        self.pending: tuple[ModelResponse, list[ToolResult | None]] | None = None
        """A turn a fork continues: the model's answer, and the results kept before the cut."""
        if task.resume is not None and not dry:
            self._restore(task.resume)
        if task.fork is not None and not dry:
            self._restore_fork(task.fork)
        output_type = agent.output_type
        self.output_schema = msgspec.json.schema(output_type) if output_type is not None else None

    def run(self) -> RunResult:
        agent = self.agent
        self._list_servers()
        while True:
            if self.pending is not None:
                # A fork cut inside this turn's tool calls: the model's answer and the calls
                # made before the cut are kept; the others run now.
                response, done = self.pending
                self.pending = None
            else:
                response = self._ask_model()
                done = None
                calls = response.message.tool_calls
                reason = agent.stop.check(self._view("model", response))
                if reason is None and not calls:
                    reason = "final_answer"  # nothing left to do: the text is the answer
                if reason is not None:
                    if calls:
                        # Keep the transcript whole: every call the model made gets a result.
                        self.messages.append(
                            Message(
                                "tool",
                                [_error(c, f"not run: the run stopped ({reason})") for c in calls],
                            )
                        )
                    output = self._final_output(response, reason)
                    if output is _CORRECT:
                        continue
                    return RunResult(output=output, usage=self.usage, turns=self.turns, stop=reason)
            calls = response.message.tool_calls
            self.open_calls = list(calls)
            results, values = self._run_tools(calls, done)
            self.messages.append(Message("tool", list[Any](results)))
            self.open_calls = []
            self.checkpoint = (len(self.messages), self.usage, self.turns)
            reason = agent.stop.check(self._view("tools", response))
            if reason is not None:
                output = self._tool_output(reason, calls, values)
                return RunResult(output=output, usage=self.usage, turns=self.turns, stop=reason)

    def _list_servers(self) -> None:
        """List the tools of the agent's MCP servers, each as a kept step: a replay sees the
        tools the run began with. A server that cannot be listed gives no tools (said once).
        """
        for server in self.agent.toolsets:
            try:
                specs: list[ToolSpec] = self.ctx.step(
                    list_server_tools,  # type: ignore[arg-type]
                    server,
                    name=f"mcp:list:{server.name}",
                    retry=server.retry,
                    returns=list[ToolSpec],
                )
            except MCPServerError as exc:
                if not self.dry:
                    log.warning("run %s goes on without the tools of %s", self.ctx.message_id, exc)
                continue
            for item in server.tools(specs):
                if item.name in self.agent.tools or item.name in self.server_tools:
                    log.warning(
                        "agent %s: MCP server %s has a tool %r, a name the agent has already; "
                        "the first one is kept",
                        self.agent.name,
                        server.name,
                        item.name,
                    )
                    continue
                self.server_tools[item.name] = item

    def _ask_model(self) -> ModelResponse:
        """One model turn, as a kept step; its answer joins the transcript."""
        agent, ctx = self.agent, self.ctx
        self.turns += 1
        early = None
        if self.turns == 1 and not self.dry and self.task.resume is None and self.task.fork is None:
            # Asked already, while the run was being kept (``_early``): that very request.
            early = take_early(ctx.store, ctx.message_id, agent, self.task)
        if early is not None:
            request = early.request
        else:
            context = RunContext(
                run_id=ctx.message_id, agent=agent.name, input=self.task.input, turn=self.turns
            )
            more = [t.spec() for t in self.server_tools.values()]
            request = agent.request(context, self.messages, more)
        announcer = None if self.dry else announcer_for(ctx.store)
        complete = (
            _complete
            if announcer is None
            else partial(_complete_live, announcer, ctx.message_id, early)
        )
        try:
            response: ModelResponse = ctx.step(  # type: ignore[assignment]
                complete,
                agent.model,
                request,
                name=f"model:{agent.name}",
                retry=agent.retry,
                returns=ModelResponse,
            )
        finally:
            if early is not None:
                early.cut()  # not read (the step was kept already): not needed
        if announcer is not None:
            announcer.kept(ctx.message_id)
        self.open_calls = list(response.message.tool_calls)
        self.last = response
        usage = response.usage
        if agent.prices is not None:
            usage = msgspec.structs.replace(usage, cost=agent.prices.cost(usage))
        self.usage += usage
        self.messages.append(response.message)
        return response

    def close_turn(self) -> None:
        """Answer the open tool calls with the cancellation, as a kept cleanup step.

        Calls that finished keep their results; the others get the cancellation as an error.
        """
        calls = self.open_calls
        if not calls:
            return
        note = "canceled: the run was canceled (or its deadline passed) before this call ended"
        done = self.turn_results if len(self.turn_results) == len(calls) else [None] * len(calls)
        results = [
            r if r is not None else _error(c, note) for c, r in zip(calls, done, strict=True)
        ]
        self.ctx.step(_answers, results, name="canceled_calls", returns=list[ToolResult])
        self.messages.append(Message("tool", list[Any](results)))
        self.open_calls = []

    def _restore(self, old_id: str) -> None:
        """Rebuild the transcript of run ``old_id`` up to its last whole turn."""
        context = self.ctx.replay_of(old_id)
        old_task = context.message.param_as(RunTask)
        replay = _Loop(context, agent_for(old_task), old_task, dry=True)
        if old_task.resume is not None:
            # The old run continued another: its first turn started from that one's transcript.
            replay._restore(old_task.resume)
        if old_task.fork is not None:
            replay._restore_fork(old_task.fork)
        try:
            replay.run()
        except (EndOfJournal, NondeterminismError, Canceled):
            pass  # the old run stops here: the new one goes on from its last whole turn
        count, usage, turns = replay.checkpoint
        self.messages = replay.messages[:count]
        self.usage = usage
        self.turns = turns

    def _restore_fork(self, fork: ForkPoint) -> None:
        """Take the transcript of run ``fork.source`` as its steps before ``fork.at`` left
        it: read from the source's journal (as kept, whatever this agent asks now), never
        run again. A cut inside a turn's tool calls keeps that turn open (``pending``).
        """
        context = self.ctx.replay_of(fork.source, until=fork.at)
        old_task = context.message.param_as(RunTask)
        replay = _Loop(context, agent_for(old_task), old_task, dry=True)
        if old_task.resume is not None:
            replay._restore(old_task.resume)
        if old_task.fork is not None:
            replay._restore_fork(old_task.fork)
        try:
            replay.run()
        except (EndOfJournal, Canceled):
            pass  # the prefix ends here: this run goes on from it
        if replay.open_calls and replay.last is not None:
            calls = replay.open_calls
            done = replay.turn_results if len(replay.turn_results) == len(calls) else []
            self.messages, self.usage, self.turns = replay.messages, replay.usage, replay.turns
            self.pending = (replay.last, list(done) or [None] * len(calls))
            return
        count, usage, turns = replay.checkpoint
        self.messages = replay.messages[:count]
        self.usage = usage
        self.turns = turns

    def _view(self, phase: Any, response: ModelResponse) -> RunView:
        return RunView(
            phase=phase, turns=self.turns, usage=self.usage, messages=self.messages, last=response
        )

    # -- the answer ----------------------------------------------------------------------------

    def _final_output(self, response: ModelResponse, reason: str) -> Any:
        text = response.message.text
        output_type = self.agent.output_type
        if output_type is None or reason != "final_answer":
            return text
        try:
            value = msgspec.json.decode(_strip_fences(text), type=output_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if self.corrections >= self.agent.output_retries:
                raise OutputInvalidError(
                    f"agent {self.agent.name}: the answer did not fit {_name(output_type)} after "
                    f"{self.corrections} correction(s): {exc}"
                ) from exc
            self.corrections += 1
            schema = msgspec.json.encode(msgspec.json.schema(output_type)).decode()
            self.messages.append(
                Message.user(
                    f"That answer is not valid: {exc}. Answer again with only JSON matching "
                    f"this schema: {schema}"
                )
            )
            return _CORRECT
        return msgspec.to_builtins(value)

    def _tool_output(self, reason: str, calls: list[ToolCall], values: list[Any]) -> Any:
        name = reason.removeprefix("tool:")
        for call, value in zip(calls, values, strict=True):
            if call.name == name:
                return value
        return self.messages[-2].text if len(self.messages) >= 2 else ""

    # -- tools ---------------------------------------------------------------------------------

    def _run_tools(
        self, calls: list[ToolCall], done: list[ToolResult | None] | None = None
    ) -> tuple[list[ToolResult], list[Any]]:
        results: list[ToolResult | None] = list(done) if done else [None] * len(calls)
        self.turn_results = results
        values: list[Any] = [None] * len(calls)
        runnable: list[tuple[int, ToolCall, Tool | AgentTool, dict[str, Any]]] = []
        for i, call in enumerate(calls):
            if results[i] is not None:
                continue  # kept before a fork's cut
            tool = self.agent.tools.get(call.name) or self.server_tools.get(call.name)
            if tool is None:
                known = ", ".join([*self.agent.tools, *self.server_tools]) or "none"
                results[i] = _error(call, f"unknown tool {call.name!r}; the tools are: {known}")
                continue
            if call.raw_arguments is not None:
                results[i] = _error(
                    call, f"the arguments are not a JSON object: {call.raw_arguments}"
                )
                continue
            try:
                kwargs = (
                    tool.parse(call.arguments) if isinstance(tool, Tool) else _agent_input(call)
                )
            except InvalidInputError as exc:
                results[i] = _error(call, str(exc))
                continue
            runnable.append((i, call, tool, kwargs))
        size = self.agent.max_concurrency
        for start in range(0, len(runnable), size):
            self._run_chunk(runnable[start : start + size], results, values)
            if not self.dry:
                announcer_for(self.ctx.store).kept(self.ctx.message_id)
        return [r for r in results if r is not None], values

    def _run_chunk(
        self,
        chunk: list[tuple[int, ToolCall, Tool | AgentTool, dict[str, Any]]],
        results: list[ToolResult | None],
        values: list[Any],
    ) -> None:
        # Sub-agents first: they run in their own actors while the functions below run here.
        ctx = self.ctx
        # Each call is a span from its start to its result (when tracing), the parent of the
        # sub-agent's own run (its context goes with the call's message).
        started: list[tuple[int, ToolCall, AgentTool, DurablePromise, Any]] = []
        try:
            for i, call, tool, kwargs in chunk:
                if isinstance(tool, AgentTool):
                    child_id = f"{ctx.message_id}/t{self.turns}-{i}-{tool.name}"
                    span = _tracing.start(f"execute_tool {tool.name}", _tool_attributes(call))
                    with _tracing.current(span):
                        ctx.spawn(run_class(tool.agent), id=child_id, spec=tool.child_spec)
                        task = RunTask(agent=tool.agent.name, input=kwargs["input"])
                        promise = ctx.start_call(child_id, task)
                    started.append((i, call, tool, promise, span))
                    if span is not None:
                        span.set_attribute("promissory.promise.id", promise.id)
                        span.set_attribute("promissory.run.id", promise.id)
                        span.set_attribute("promissory.actor.id", child_id)
                        span.set_attribute(_tracing.REPLAYED, promise.done())
            self._run_functions(chunk, results, values)
            for i, call, tool, promise, span in started:
                with _tracing.current(span):
                    error = self._sub_agent_result(i, call, tool, promise, results, values)
                _tracing.finish(span, error)
        except BaseException as exc:
            for *_, span in started:
                _tracing.finish(span, exc)
            raise

    def _run_functions(
        self,
        chunk: list[tuple[int, ToolCall, Tool | AgentTool, dict[str, Any]]],
        results: list[ToolResult | None],
        values: list[Any],
    ) -> None:
        ctx = self.ctx
        plain = [(i, c, t, kw) for i, c, t, kw in chunk if isinstance(t, Tool) and not t.durable]
        steps = [
            StepCall(
                fn=t.fn,
                kwargs=kw,
                name=f"tool:{t.name}",
                retry=t.retry,
                returns=t.returns,
                timeout=t.timeout,
            )
            for _, _, t, kw in plain
        ]
        if self.dry:
            # One at a time (the same positions): a read-only replay that ends among them (a
            # fork cut between two calls of a turn) keeps the results of those before.
            outcomes = []
            for (i, call, _, _), step in zip(plain, steps, strict=True):
                [outcome] = ctx.step_many([step], signals=False)
                _take(call, outcome, i, results, values)
                outcomes.append(outcome)
        else:
            outcomes = ctx.step_many(
                steps, max_concurrency=self.agent.max_concurrency, signals=False
            )
            for (i, call, _, _), outcome in zip(plain, outcomes, strict=True):
                _take(call, outcome, i, results, values)
        # Finished calls keep their results (above) before a cancel or a wait ends the turn.
        ctx.raise_signals(outcomes)
        for i, call, tool, kwargs in chunk:
            if isinstance(tool, Tool) and tool.durable:
                try:
                    with _tracing.span(f"execute_tool {tool.name}", _tool_attributes(call)):
                        value = tool.fn(ctx, **kwargs)
                except FencedError:
                    raise  # this activation is stale: it must stop, not tell the model
                except Exception as exc:  # a durable tool's failure is an error result too
                    results[i] = _error(call, _describe(exc))
                    continue
                values[i] = value
                results[i] = ToolResult(call_id=call.id, name=call.name, content=content_of(value))

    def _sub_agent_result(
        self,
        i: int,
        call: ToolCall,
        tool: AgentTool,
        promise: DurablePromise,
        results: list[ToolResult | None],
        values: list[Any],
    ) -> BaseException | None:
        """Wait for a sub-agent's run and put its result (or failure) in the turn's results;
        return the failure, for its span.
        """
        try:
            child: RunResult = promise.result(RunResult)
        except ChildCanceledError as exc:
            if self.dry:
                raise EndOfJournal(call.id) from None  # the old run was cut off here
            results[i] = _error(call, f"the {tool.name} agent was canceled: {exc}")
            return exc
        except ChildFailedError as exc:
            if tool.raise_errors:
                raise
            results[i] = _error(call, f"the {tool.name} agent failed: {exc.cause or exc}")
            return exc
        except FencedError:
            raise  # this activation is stale: it must stop, not tell the model
        except Exception as exc:
            if tool.raise_errors:
                raise
            results[i] = _error(call, f"the {tool.name} agent failed: {_describe(exc)}")
            return exc
        self.usage += child.usage
        values[i] = child.output
        results[i] = ToolResult(call_id=call.id, name=call.name, content=content_of(child.output))
        return None


def _take(
    call: ToolCall,
    outcome: StepOutcome,
    i: int,
    results: list[ToolResult | None],
    values: list[Any],
) -> None:
    """Put a tool step's outcome in the turn's results (a signal leaves its place empty)."""
    if outcome.ok:
        values[i] = outcome.value
        results[i] = ToolResult(call_id=call.id, name=call.name, content=content_of(outcome.value))
    elif not isinstance(outcome.error, Canceled | Suspend | FencedError):
        results[i] = _error(call, _describe(outcome.error))


def _tool_attributes(call: ToolCall) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": call.name,
        "gen_ai.tool.call.id": call.id,
    }


def _answers(results: list[ToolResult]) -> list[ToolResult]:
    return results


class _Correct:
    pass


_CORRECT: Any = _Correct()


def _agent_input(call: ToolCall) -> dict[str, Any]:
    value = call.arguments.get("input")
    if not isinstance(value, str):
        raise InvalidInputError(f"invalid arguments for {call.name}: 'input' must be a string")
    return {"input": value}


def _error(call: ToolCall, text: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, content=text, is_error=True)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    return f"{type(exc).__name__}: {exc}"


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        if stripped.rstrip().endswith("```"):
            stripped = stripped.rstrip()[:-3]
    return stripped.strip()


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def run_class(agent: Agent) -> type[AgentRun]:
    """The actor type of ``agent``'s runs: ``AgentRun`` kept under ``agent:<name>``, so that
    only nodes that define the agent host its runs (and say so: "waiting for a node that hosts
    agent:lead"). Made once per agent name, and kept where ``Agent.start`` finds it.
    """
    cls: type[AgentRun] | None = _run_types.get(agent.name)
    if cls is None:
        qualname = f"AgentRun[{agent.name}]"
        cls = types.new_class(
            qualname,
            (AgentRun,),
            {"name": agent.type_name},
            lambda ns: ns.update(
                __module__=AgentRun.__module__,
                __qualname__=qualname,
                # Before issue 16 every run was kept under AgentRun's own name.
                former_kinds=(AgentRun.kind(),),
            ),
        )
        _run_types[agent.name] = cls
    return cls


_on_define.append(run_class)
