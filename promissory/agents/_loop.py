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

from typing import TYPE_CHECKING, Any

import msgspec

from ..actors import Cancelled, Context, DurableActor, DurablePromise, Exit, handler
from ..actors._cancel import EndOfJournal
from ..actors._signals import Suspend
from ..actors._steps import StepCall
from ..errors import (
    ChildCancelled,
    ChildFailed,
    FencedError,
    InvalidInputError,
    NondeterminismError,
    PromissoryError,
)
from ._agent import Agent, AgentTool, RunContext, RunHandle, RunResult, RunTask, registered
from ._messages import Message, ModelRequest, ModelResponse, ToolCall, ToolResult, Usage
from ._model import Model
from ._stop import RunView
from ._tools import Tool, content_of

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["AgentRun", "OutputInvalidError"]


class OutputInvalidError(PromissoryError):
    """The model's final answer did not fit the agent's ``output_type``, after corrections."""


async def _complete(model: Model, request: ModelRequest) -> ModelResponse:
    return await model.complete(request)


class AgentRun(DurableActor[None]):
    """The actor of one agent run: its one message is the task; its reply, the result."""

    @handler
    def run(self, ctx: Context, task: RunTask) -> RunResult:
        """Run the agent's loop to a stop; the run's actor ends with it (and its sub-agents)."""
        loop = _Loop(ctx, registered(task.agent), task)
        try:
            result = loop.run()
        except Cancelled:
            # Canceled or past its deadline: answer every tool call of the turn in flight (as
            # an error), so the transcript is whole, then end as a shutdown.
            loop.close_turn()
            ctx.stop(Exit.SHUTDOWN)
            raise
        ctx.stop()
        return result

    @classmethod
    def resume(cls, rt: Runtime, run_id: str) -> RunHandle:
        """Continue a canceled or timed-out run from its last whole turn, as a new run.

        The new run's id is ``{run_id}~resume{n}``; its transcript up to that turn is the old
        run's, rebuilt from the old run's kept steps without calling anything.
        """
        assert rt.store is not None
        old = rt.store.get(run_id)
        task = old.param_as(RunTask)
        n = 1
        while rt.store.find(f"{run_id}~resume{n}") is not None:
            n += 1
        agent = registered(task.agent)
        return agent.start(rt, task.input, id=f"{run_id}~resume{n}", resume=run_id)


class _Loop:
    def __init__(self, ctx: Context, agent: Agent, task: RunTask, dry: bool = False) -> None:
        self.ctx = ctx
        self.agent = agent
        self.task = task
        self.dry = dry
        text = task.input if isinstance(task.input, str) else content_of(task.input)
        self.messages: list[Message] = [Message.user(text)]
        self.usage = Usage()
        self.turns = 0
        self.corrections = 0
        self.open_calls: list[ToolCall] = []
        """The tool calls of the turn in flight."""
        self.turn_results: list[ToolResult | None] = []
        """Their results so far, in the model's order (``None``: not yet)."""
        self.checkpoint: tuple[int, Usage, int] = (1, Usage(), 0)
        """(messages, usage, turns) at the end of the last whole turn."""
        if task.resume is not None and not dry:
            self._restore(task.resume)
        output_type = agent.output_type
        self.output_schema = msgspec.json.schema(output_type) if output_type is not None else None

    def run(self) -> RunResult:
        agent, ctx = self.agent, self.ctx
        while True:
            self.turns += 1
            context = RunContext(
                run_id=ctx.message_id, agent=agent.name, input=self.task.input, turn=self.turns
            )
            request = ModelRequest(
                system=agent.system_prompt(context),
                messages=list(self.messages),
                tools=agent.tool_specs(),
                output_schema=(
                    msgspec.json.schema(agent.output_type)
                    if agent.output_type is not None
                    else None
                ),
                settings=agent.settings,
            )
            response: ModelResponse = ctx.step(  # type: ignore[assignment]
                _complete,
                agent.model,
                request,
                name=f"model:{agent.name}",
                retry=agent.retry,
                returns=ModelResponse,
            )
            self.open_calls = list(response.message.tool_calls)
            usage = response.usage
            if agent.prices is not None:
                usage = msgspec.structs.replace(usage, cost=agent.prices.cost(usage))
            self.usage += usage
            self.messages.append(response.message)
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
            results, values = self._run_tools(calls)
            self.messages.append(Message("tool", list[Any](results)))
            self.open_calls = []
            self.checkpoint = (len(self.messages), self.usage, self.turns)
            reason = agent.stop.check(self._view("tools", response))
            if reason is not None:
                output = self._tool_output(reason, calls, values)
                return RunResult(output=output, usage=self.usage, turns=self.turns, stop=reason)

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
        replay = _Loop(self.ctx.replay_of(old_id), self.agent, self.task, dry=True)
        try:
            replay.run()
        except (EndOfJournal, NondeterminismError, Cancelled):
            pass  # the old run stops here: the new one goes on from its last whole turn
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

    def _run_tools(self, calls: list[ToolCall]) -> tuple[list[ToolResult], list[Any]]:
        results: list[ToolResult | None] = [None] * len(calls)
        self.turn_results = results
        values: list[Any] = [None] * len(calls)
        runnable: list[tuple[int, ToolCall, Tool | AgentTool, dict[str, Any]]] = []
        for i, call in enumerate(calls):
            tool = self.agent.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.agent.tools) or "none"
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
        return [r for r in results if r is not None], values

    def _run_chunk(
        self,
        chunk: list[tuple[int, ToolCall, Tool | AgentTool, dict[str, Any]]],
        results: list[ToolResult | None],
        values: list[Any],
    ) -> None:
        ctx = self.ctx
        # Sub-agents first: they run in their own actors while the functions below run here.
        started: list[tuple[int, ToolCall, AgentTool, DurablePromise]] = []
        for i, call, tool, kwargs in chunk:
            if isinstance(tool, AgentTool):
                child_id = f"{ctx.message_id}/t{self.turns}-{i}-{tool.name}"
                ctx.spawn(AgentRun, id=child_id, spec=tool.child_spec)
                task = RunTask(agent=tool.agent.name, input=kwargs["input"])
                started.append((i, call, tool, ctx.start_call(child_id, task)))
        plain = [(i, c, t, kw) for i, c, t, kw in chunk if isinstance(t, Tool) and not t.durable]
        outcomes = ctx.step_many(
            [
                StepCall(
                    fn=t.fn,
                    kwargs=kw,
                    name=f"tool:{t.name}",
                    retry=t.retry,
                    returns=t.returns,
                    timeout=t.timeout,
                )
                for _, _, t, kw in plain
            ],
            max_concurrency=self.agent.max_concurrency,
            signals=False,
        )
        for (i, call, _, _), outcome in zip(plain, outcomes, strict=True):
            if outcome.ok:
                values[i] = outcome.value
                results[i] = ToolResult(
                    call_id=call.id, name=call.name, content=content_of(outcome.value)
                )
            elif not isinstance(outcome.error, Cancelled | Suspend | FencedError):
                results[i] = _error(call, _describe(outcome.error))
        # Finished calls keep their results (above) before a cancel or a wait ends the turn.
        ctx.raise_signals(outcomes)
        for i, call, tool, kwargs in chunk:
            if isinstance(tool, Tool) and tool.durable:
                try:
                    value = tool.fn(ctx, **kwargs)
                except FencedError:
                    raise  # this activation is stale: it must stop, not tell the model
                except Exception as exc:  # a durable tool's failure is an error result too
                    results[i] = _error(call, _describe(exc))
                    continue
                values[i] = value
                results[i] = ToolResult(call_id=call.id, name=call.name, content=content_of(value))
        for i, call, tool, promise in started:
            try:
                child: RunResult = promise.result(RunResult)
            except ChildCancelled as exc:
                if self.dry:
                    raise EndOfJournal(call.id) from None  # the old run was cut off here
                results[i] = _error(call, f"the {tool.name} agent was canceled: {exc}")
                continue
            except ChildFailed as exc:
                if tool.raise_errors:
                    raise
                results[i] = _error(call, f"the {tool.name} agent failed: {exc.cause or exc}")
                continue
            except FencedError:
                raise  # this activation is stale: it must stop, not tell the model
            except Exception as exc:
                if tool.raise_errors:
                    raise
                results[i] = _error(call, f"the {tool.name} agent failed: {_describe(exc)}")
                continue
            self.usage += child.usage
            values[i] = child.output
            results[i] = ToolResult(
                call_id=call.id, name=call.name, content=content_of(child.output)
            )


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
