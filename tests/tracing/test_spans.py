"""OpenTelemetry spans of an agent run (the SDK's in-memory exporter), a trace continued across
a SIGKILL and a resume, and no cost (nothing imported) when tracing is not configured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promissory import (
    Context,
    DurableActor,
    Runtime,
    current_step,
    disable_tracing,
    enable_tracing,
    handler,
)
from promissory.agents import Agent, ModelRequest, ModelResponse, ScriptedModel, call, reply, tool
from promissory.errors import ModelError, PromiseCanceledError
from tests.cli.kit import ROOT
from tests.kit import eventually

from .kit import RUN, SpanData, lead, normal, read_spans, tree

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    enable_tracing(provider)
    try:
        yield exporter
    finally:
        disable_tracing()


def finished(exporter: InMemorySpanExporter) -> list[SpanData]:
    return [SpanData.of(s) for s in exporter.get_finished_spans()]


def test_an_agent_run_is_a_tree_of_spans_with_its_sub_agent_and_tools(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    with Runtime(dsn, suspend_after=5.0) as rt:
        assert rt.run(lead, "Compare X and Y", id=RUN, timeout=30) == "X is old; Y is new."
    spans = finished(exporter)

    [root] = tree(spans)
    assert root.shape() == normal(
        (
            f"send {RUN}",
            [
                (
                    "invoke_agent t-lead",
                    [
                        "chat gpt-4o",
                        "chat gpt-4o",
                        "execute_tool search",
                        (
                            "execute_tool t-researcher",
                            [
                                (
                                    "invoke_agent t-researcher",
                                    ["chat gpt-4o-mini", "chat gpt-4o-mini", "execute_tool search"],
                                ),
                                f"wait message {RUN}/3",
                            ],
                        ),
                    ],
                )
            ],
        )
    ), root.shape()
    # In the order the work was done: a model call, its tool calls, the next model call.
    lead_run = root.children[0]
    order = [c.name for c in sorted(lead_run.children, key=lambda c: c.start)]
    assert order[0] == order[-1] == "chat gpt-4o"
    assert len({s.trace for s in spans}) == 1, "one trace"
    # Every span names its promise.
    assert all("promissory.promise.id" in s.attributes for s in spans), [
        s.name for s in spans if "promissory.promise.id" not in s.attributes
    ]
    by_name = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    first, last = sorted(by_name["chat gpt-4o"], key=lambda s: s.start)
    # GenAI semantic conventions on model calls.
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.provider.name"] == "openai"
    assert first.attributes["gen_ai.request.model"] == "gpt-4o"
    assert first.attributes["gen_ai.agent.name"] == "t-lead"
    assert first.attributes["gen_ai.usage.input_tokens"] == 100
    assert first.attributes["gen_ai.usage.output_tokens"] == 10
    assert last.attributes["gen_ai.usage.input_tokens"] == 150
    assert first.attributes["promissory.promise.id"] == f"{RUN}/1"
    assert first.attributes["promissory.replayed"] is False
    # Tool calls and the sub-agent call.
    call = by_name["execute_tool t-researcher"][0]
    assert call.attributes["gen_ai.tool.name"] == "t-researcher"
    assert call.attributes["gen_ai.tool.call.id"] == "r1"
    assert call.attributes["promissory.run.id"] == f"{RUN}/3"
    sub = by_name["invoke_agent t-researcher"][0]
    assert sub.attributes["promissory.promise.id"] == f"{RUN}/3"
    assert sub.attributes["gen_ai.agent.name"] == "t-researcher"
    searches = by_name["execute_tool search"]
    assert {s.attributes["promissory.promise.id"] for s in searches} == {
        f"{RUN}/3/2",
        f"{RUN}/4",
    }
    run = by_name["invoke_agent t-lead"][0]
    assert run.attributes["promissory.promise.id"] == RUN
    assert run.attributes["promissory.replayed_steps"] == 0


def test_a_suspended_run_resumes_in_the_same_trace_with_its_kept_steps_replayed(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    # Suspending at once on the sub-agent: the lead's message is handled again when the
    # sub-agent is done, replaying its kept steps.
    with Runtime(dsn, suspend_after=0.0) as rt:
        assert rt.run(lead, "Compare X and Y", id=RUN, timeout=30) == "X is old; Y is new."
    spans = finished(exporter)
    assert len({s.trace for s in spans}) == 1
    runs = sorted((s for s in spans if s.name == "invoke_agent t-lead"), key=lambda s: s.start)
    assert len(runs) >= 2
    assert runs[0].attributes.get("promissory.suspended") is True
    assert runs[-1].attributes["promissory.replayed_steps"] > 0
    replayed = [s for s in spans if s.attributes.get("promissory.replayed") is True]
    # The first model call, replayed in every later handling, never counted as new work.
    assert any(s.attributes["promissory.promise.id"] == f"{RUN}/1" for s in replayed)
    fresh = [
        s for s in spans if s.name == "chat gpt-4o" and not s.attributes["promissory.replayed"]
    ]
    assert len(fresh) == 2, "each model call ran once"
    assert all("gen_ai.usage.input_tokens" not in s.attributes for s in replayed)


def child(dsn: str, spans: Path, **env: str) -> subprocess.Popen[str]:
    environ = dict(os.environ, PROMISSORY_DSN=dsn, PYTHONPATH=str(ROOT), **env)
    environ.pop("PROMISSORY_CRASH_AT", None)
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tracing.traced_child", str(spans)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_run_resumed_after_sigkill_continues_its_trace_and_marks_replayed_steps(
    dsn: str, tmp_path: Path
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    # Killed once the lead's first model step and one more are kept.
    first = child(dsn, spans_file, PROMISSORY_CRASH_AT="step.kept:2")
    out, err = first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL, err
    before = read_spans(spans_file)
    [trace] = {s.trace for s in before}

    again = child(dsn, spans_file)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert 'OUTPUT "X is old; Y is new."' in out
    spans = read_spans(spans_file)
    after = spans[len(before) :]

    assert {s.trace for s in spans} == {trace}, "the resumed run continues the same trace"
    resumed = [s for s in after if s.name == "invoke_agent t-lead"]
    assert resumed and resumed[0].attributes["promissory.replayed_steps"] >= 1
    # Its parent is the span that sent the run, in the killed process.
    send = next(s for s in before if s.name == f"send {RUN}")
    assert resumed[0].parent == send.span
    # The model call kept before the kill is replayed, marked so, and not run again.
    model_1 = [s for s in after if s.attributes.get("promissory.promise.id") == f"{RUN}/1"]
    assert model_1 and all(s.attributes["promissory.replayed"] is True for s in model_1)
    # A model call is "chat {model}"; a replayed one, whose model is not asked, is "chat".
    chats = [s for s in spans if s.name.split(" ", 1)[0] == "chat"]
    ran = [
        s.attributes["promissory.promise.id"]
        for s in chats
        if not s.attributes["promissory.replayed"]
    ]
    replayed = {
        s.attributes["promissory.promise.id"]
        for s in after
        if s.name.split(" ", 1)[0] == "chat" and s.attributes["promissory.replayed"]
    }
    # Four model calls, each run once: in the first process, or in the second (a call kept
    # right before the kill may have lost its span with the process: it is replayed then).
    assert len({s.attributes["promissory.promise.id"] for s in chats}) == 4
    assert sorted(set(ran)) == sorted(ran), "no model call ran twice"
    assert set(ran) | replayed == {s.attributes["promissory.promise.id"] for s in chats}
    assert ran.count(f"{RUN}/1") == 1


NO_COST = """
import sys, importlib.util
{prelude}
from promissory import Context, DurableActor, Runtime, handler, tracing_enabled

class Echo(DurableActor[None], name="tests.tracing.Echo"):
    @handler
    def echo(self, ctx: Context, text: str) -> str:
        return ctx.step(str.upper, text)

with Runtime({dsn!r}) as rt:
    assert rt.spawn(Echo, id="echo").ask("hi").get(timeout=20) == "HI"
assert not tracing_enabled()
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print("LOADED", loaded)
"""


@pytest.mark.parametrize(
    "prelude",
    [
        "",  # installed but not configured
        "importlib.util.find_spec = lambda name, *a: None  # not installed",
    ],
    ids=["not_configured", "not_installed"],
)
def test_without_configuration_tracing_imports_nothing_and_makes_no_spans(
    dsn: str, prelude: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = textwrap.dedent(NO_COST.format(prelude=prelude, dsn=dsn))
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout


def test_the_environment_configures_tracing_the_usual_way(dsn: str) -> None:
    code = textwrap.dedent(
        f"""
        from promissory import Context, DurableActor, Runtime, handler, tracing_enabled

        def shout(text: str) -> str:
            return text.upper()

        class Echo(DurableActor[None], name="tests.tracing.Echo"):
            @handler
            def echo(self, ctx: Context, text: str) -> str:
                return ctx.step(shout, text)

        with Runtime({dsn!r}) as rt:
            assert rt.spawn(Echo, id="echo").ask("hi").get(timeout=20) == "HI"
        assert tracing_enabled()
        """
    )
    env = dict(os.environ, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="echo-service")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The console exporter prints each span as JSON, with the service's name.
    assert '"name": "process str"' in done.stdout
    assert '"name": "step __main__.shout"' in done.stdout
    assert '"service.name": "echo-service"' in done.stdout


class FailsFirst:
    """A model whose first incarnation of each step fails (not retryable): a crash."""

    name = "openai:gpt-4o-mini"

    def __init__(self, answer: str) -> None:
        self.answer = answer

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = current_step()
        if step is not None and "~" not in step.id:
            raise ModelError("the answer came back truncated", "malformed_output", False)
        return reply(self.answer)


def test_a_restart_is_a_span_of_the_trace_under_the_handling_that_crashed(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    shaky = Agent("t-shaky", "Answer.", FailsFirst("steady now"))
    boss = Agent(
        "t-boss",
        "Delegate.",
        ScriptedModel([reply("", call("t-shaky", "c1", input="go")), "done"]),
        tools=[shaky.as_tool(restart="transient", intensity=2)],
    )
    with Runtime(dsn, suspend_after=5.0) as rt:
        assert rt.run(boss, "go", id="agent/run/shaky", timeout=30) == "done"
    spans = finished(exporter)
    assert len({s.trace for s in spans}) == 1
    by_span = {s.span: s for s in spans}
    [restart] = [s for s in spans if s.name.startswith("restart ")]
    assert restart.name == "restart agent/run/shaky/t1-0-t-shaky"
    assert restart.attributes["promissory.restarts"] == 1
    crashed = by_span[restart.parent]  # type: ignore[index]
    assert crashed.name == "invoke_agent t-shaky"
    assert "promissory.suspended" not in crashed.attributes


@tool
def wait_for_ok(ctx: Context) -> str:
    """Wait for a person's go."""
    return "ok" if ctx.promise(id="t-approvals/1").result(bool) else "no"


def test_a_cancel_is_a_span_and_the_handling_it_cut_is_marked(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    waiter = Agent(
        "t-waiter",
        "Wait.",
        ScriptedModel([reply("", call("wait_for_ok", "w1")), "done"]),
        tools=[wait_for_ok],
    )
    with Runtime(dsn, suspend_after=0.0) as rt:
        handle = rt.start(waiter, "go", id="agent/run/cut")
        assert rt.store is not None
        eventually(lambda: rt.store.find("t-approvals/1"))  # type: ignore[union-attr]
        # Canceled once suspended: a cancel that came first would leave no suspended span.
        eventually(lambda: rt.host.suspended_count() == 1, what="the run suspended")
        assert rt.cancel("agent/run/cut", reason="enough")
        with pytest.raises(PromiseCanceledError):
            handle.result(timeout=20)

        def cleaned_up() -> bool:  # the handling that cleans up after the cancel has ended
            return any(
                s.name == "invoke_agent t-waiter" and s.attributes.get("promissory.canceled")
                for s in finished(exporter)
            )

        eventually(cleaned_up)
    spans = finished(exporter)
    [cancel] = [s for s in spans if s.name == "cancel agent/run/cut"]
    assert cancel.attributes["promissory.promise.id"] == "agent/run/cut"
    runs = [s for s in spans if s.name == "invoke_agent t-waiter"]
    assert any(s.attributes.get("promissory.canceled") for s in runs)
    assert any(s.attributes.get("promissory.suspended") for s in runs)
    waits = [s for s in spans if s.name.startswith("wait promise t-approvals/1")]
    assert waits and waits[0].attributes["promissory.awaiting"] == ("t-approvals/1",)


class Stepping(DurableActor[None]):
    """Two steps, then a pause with no durable work: what a step's span end must not wait on."""

    @handler
    def go(self, ctx: Context, msg: str) -> str:
        first = ctx.step(str.upper, msg)
        second = ctx.step(str.lower, first)
        time.sleep(0.3)
        return second


def test_a_step_span_ends_when_its_step_did_and_before_its_handling_span(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    # A step's span is ended off the step's path (while the next commit is under way), at
    # the time the step ended; its handling's span ends after it.
    with Runtime(dsn) as rt:
        assert rt.spawn(Stepping, id="stepping").ask("Hi").get(timeout=10) == "hi"
        eventually(lambda: any(s.name.startswith("process") for s in finished(exporter)))
        spans = finished(exporter)
    steps = sorted((s for s in spans if s.name.startswith("step ")), key=lambda s: s.start)
    [handling] = [s for s in spans if s.name.startswith("process")]
    assert len(steps) == 2 and all(s.parent == handling.span for s in steps)
    assert steps[0].end <= steps[1].start, "each ended when its step did"
    assert handling.end - steps[1].end >= 0.25e9, "not when the next commit came"
    order = [s.span for s in spans]  # as they were ended
    assert order.index(handling.span) > max(order.index(s.span) for s in steps)


class Failing(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("an exporter's bug")


def test_a_span_processor_that_fails_does_not_fail_the_steps(dsn: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(Failing())
    enable_tracing(provider)
    try:
        with Runtime(dsn) as rt:
            ref = rt.spawn(Stepping, id="stepping-2")
            assert ref.ask("Ok").get(timeout=10) == "ok"
            assert ref.ask("Again").get(timeout=10) == "again"
    finally:
        disable_tracing()


USER: dict[str, TracerProvider] = {}
"""The provider of the user's own spans (to the test's exporter, not promissory's provider)."""


def traced_work(tag: str) -> str:
    with USER["provider"].get_tracer("user").start_as_current_span(f"user {tag}"):
        time.sleep(0.01)
    return tag


def failing_work() -> None:
    raise ValueError("no such thing")


class Nesting(DurableActor[None]):
    """A step that starts a span of its own, a quiet step, and a step that fails."""

    @handler
    def go(self, ctx: Context, msg: str) -> str:
        before = time.time_ns()
        ctx.step(traced_work, msg)
        ctx.step(str.upper, msg)
        try:
            ctx.step(failing_work)
        except ValueError:
            pass
        return str(before)


def test_a_step_span_is_the_parent_of_spans_started_inside_it_and_keeps_its_own_times(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    # The SDK starts a step's span only when something inside needs it (here a span of the
    # user's) or once the step is done; either way it has the step's own start time.
    USER["provider"] = TracerProvider()
    USER["provider"].add_span_processor(SimpleSpanProcessor(exporter))
    with Runtime(dsn) as rt:
        before = int(rt.spawn(Nesting, id="nesting").ask("n").get(timeout=10))
        eventually(lambda: any(s.name.startswith("process") for s in finished(exporter)))
        spans = finished(exporter)
    by_name = {s.name: s for s in spans}
    [handling] = [s for s in spans if s.name.startswith("process")]
    outer = by_name["step tests.tracing.test_spans.traced_work"]
    quiet = by_name["step ?.str.upper"]
    failed = by_name["step tests.tracing.test_spans.failing_work"]
    user = by_name["user n"]
    assert user.parent == outer.span and user.trace == outer.trace
    assert {outer.parent, quiet.parent, failed.parent} == {handling.span}
    assert before <= outer.start <= user.start < user.end <= outer.end <= quiet.start
    assert quiet.start <= quiet.end <= failed.start <= failed.end <= handling.end
    [raw] = [s for s in exporter.get_finished_spans() if s.name == failed.name]
    assert not raw.status.is_ok
    assert [e.name for e in raw.events] == ["exception"]
    assert raw.events[0].attributes["exception.type"] == "ValueError"


class Nested(DurableActor[None]):
    """A step whose function runs a step of its own."""

    @handler
    def go(self, ctx: Context, msg: str) -> str:
        def outer() -> str:
            inner: str = ctx.step(str.upper, msg)
            return inner

        return ctx.step(outer, name="outer")


@pytest.mark.timeout(60)
def test_a_step_inside_a_step_is_its_child_span_and_nothing_waits_on_it(
    dsn: str, exporter: InMemorySpanExporter
) -> None:
    # The inner step's span is started (off its path, by the writer) with the outer one as
    # its parent, itself not started yet: the outer one is started first, not waited on.
    with Runtime(dsn) as rt:
        assert rt.spawn(Nested, id="nested").ask("n").get(timeout=20) == "N"
        eventually(lambda: any(s.name == "process str" for s in finished(exporter)))
        spans = finished(exporter)
    by_name = {s.name: s for s in spans}
    outer, inner = by_name["step outer"], by_name["step ?.str.upper"]
    assert inner.parent == outer.span and inner.trace == outer.trace
    assert outer.start <= inner.start <= inner.end <= outer.end
