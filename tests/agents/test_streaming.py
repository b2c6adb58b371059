"""Streaming: both adapters read server-sent events from a loopback server (the text as it
arrives, then the same answer ``complete`` gives), and a run's stream yields the kept events in
order, then live ones, each once, in this process or opened late.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from promissory.actors import RetryPolicy
from promissory.agents import (
    Agent,
    AnthropicModel,
    FunctionModel,
    ModelAnswered,
    ModelRequest,
    ModelResponse,
    OpenAIChatModel,
    RunEnded,
    RunHandle,
    RunStarted,
    TextDelta,
    TextDiscarded,
    ToolFinished,
    ToolStarted,
    _stream as stream_module,
    call,
    reply,
    tool,
)
from promissory.agents._stream import announcer_for
from promissory.errors import ModelError
from promissory.runtime import Runtime
from promissory.store import EventKind, Store
from tests.agents.fake_llm import FakeProvider, anthropic_stream, openai_stream
from tests.kit import eventually

REQUEST = ModelRequest(system="Be brief.", messages=[], tools=[])


def streamed(model: Any) -> tuple[list[str], ModelResponse]:
    """Run ``model.stream(REQUEST)``: its pieces of text, and the whole answer."""

    async def read() -> tuple[list[str], ModelResponse]:
        pieces: list[str] = []
        answer = None
        async for item in model.stream(REQUEST):
            if isinstance(item, ModelResponse):
                answer = item
            else:
                pieces.append(item)
        assert answer is not None
        return pieces, answer

    return asyncio.run(read())


def test_openai_streams_text_as_it_arrives_then_the_whole_answer(fake: FakeProvider) -> None:
    fake.answer_stream(
        openai_stream(
            ["Let me ", "add."],
            [("call_1", "add", ['{"a": ', "1, ", '"b": 2}']), ("call_2", "neg", ["{}"])],
            usage={"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        )
    )
    model = OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k")
    pieces, answer = streamed(model)
    assert pieces == ["Let me ", "add."]
    assert answer.message.text == "Let me add."
    assert [(c.id, c.name, c.arguments) for c in answer.message.tool_calls] == [
        ("call_1", "add", {"a": 1, "b": 2}),
        ("call_2", "neg", {}),
    ]
    assert (answer.stop_reason, answer.usage.input_tokens, answer.usage.output_tokens) == (
        "tool_calls",
        20,
        7,
    )
    sent = fake.requests[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_anthropic_streams_text_as_it_arrives_then_the_whole_answer(fake: FakeProvider) -> None:
    fake.answer_stream(
        anthropic_stream(["Adding", " now."], [("toolu_1", "add", ['{"a": 1,', ' "b": 2}'])])
    )
    model = AnthropicModel("claude-test", base_url=fake.anthropic_url, api_key="k")
    pieces, answer = streamed(model)
    assert pieces == ["Adding", " now."]
    assert answer.message.text == "Adding now."
    [c] = answer.message.tool_calls
    assert (c.id, c.name, c.arguments) == ("toolu_1", "add", {"a": 1, "b": 2})
    assert (answer.stop_reason, answer.usage.input_tokens, answer.usage.output_tokens) == (
        "tool_calls",
        11,
        5,
    )
    assert fake.requests[0].body["stream"] is True


def test_a_server_that_answers_whole_json_to_a_stream_request_is_read_whole(
    fake: FakeProvider,
) -> None:
    from tests.agents.fake_llm import openai_answer

    fake.answer(openai_answer("all at once"))
    pieces, answer = streamed(OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k"))
    assert (pieces, answer.message.text) == (["all at once"], "all at once")


def test_a_stream_cut_by_an_error_event_is_a_retryable_model_error(fake: FakeProvider) -> None:
    events = anthropic_stream(["Half"])[:4]
    events.append(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    )
    fake.answer_stream(events)
    with pytest.raises(ModelError, match="busy") as caught:
        streamed(AnthropicModel("claude-test", base_url=fake.anthropic_url, api_key="k"))
    assert caught.value.retryable


# -- a run's stream -----------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


listening = threading.Event()
"""Set once the test's stream has its first event: the models below speak after that (text
written before a stream subscribes is not replayed: it was never kept)."""


@pytest.fixture(autouse=True)
def not_listening() -> None:
    listening.clear()


def listened(events: Iterator[Any]) -> list[Any]:
    """The events of a stream, letting the models speak once it has begun."""
    seen = []
    for event in events:
        seen.append(event)
        listening.set()
    return seen


async def after_listening(pieces: list[str]) -> AsyncIterator[str]:
    await asyncio.to_thread(listening.wait, 10)
    for piece in pieces:
        yield piece


def counting(request: ModelRequest) -> Any:
    if not any(m.role == "assistant" for m in request.messages):
        return reply("", call("add", "c1", a=2, b=3))
    return after_listening(["2 + 3 ", "is ", "5."])


adder = Agent("stream-adder", "Add.", model=FunctionModel(counting, name="counting"), tools=[add])


def kept(events: list[Any]) -> list[Any]:
    """The events that come from kept rows (not the live text)."""
    return [e for e in events if not isinstance(e, TextDelta | TextDiscarded)]


def test_a_run_streams_its_text_tool_calls_and_end_in_order(rt: Runtime) -> None:
    events = listened(iter(rt.start(adder, "2+3?", id="streams/1").stream()))
    assert events == [
        RunStarted(run="streams/1", agent="stream-adder", input="2+3?"),
        ModelAnswered(
            run="streams/1", step="streams/1/1", text="", tool_calls=[call("add", "c1", a=2, b=3)]
        ),
        ToolStarted(run="streams/1", call_id="c1", name="add", arguments={"a": 2, "b": 3}),
        ToolFinished(
            run="streams/1", step="streams/1/2", name="add", call_id="c1", ok=True, content="5"
        ),
        TextDelta(run="streams/1", step="streams/1/3", text="2 + 3 "),
        TextDelta(run="streams/1", step="streams/1/3", text="is ", offset=6),
        TextDelta(run="streams/1", step="streams/1/3", text="5.", offset=9),
        ModelAnswered(run="streams/1", step="streams/1/3", text="2 + 3 is 5."),
        RunEnded(run="streams/1", state="resolved", output="2 + 3 is 5."),
    ]


def test_a_stream_opened_after_the_run_replays_what_was_kept_once(rt: Runtime) -> None:
    handle = rt.start(adder, "2+3?", id="streams/2")
    live = listened(iter(handle.stream()))
    assert rt.store is not None
    late = list(RunHandle("streams/2", rt.store).stream())
    assert late == kept(live)
    assert late[-1] == RunEnded(run="streams/2", state="resolved", output="2 + 3 is 5.")


def test_a_stream_is_an_async_iterator_too(rt: Runtime) -> None:
    handle = rt.start(adder, "2+3?", id="streams/3")

    async def read() -> list[Any]:
        seen = []
        async for event in handle.stream():
            seen.append(event)
            listening.set()
        return seen

    events = asyncio.run(read())
    assert events[-1] == RunEnded(run="streams/3", state="resolved", output="2 + 3 is 5.")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "2 + 3 is 5."


def test_text_of_an_attempt_that_failed_mid_stream_is_discarded(rt: Runtime) -> None:
    attempts = []

    async def flaky(request: ModelRequest) -> AsyncIterator[str]:
        attempts.append(1)
        await asyncio.to_thread(listening.wait, 10)
        yield "Hel"
        if len(attempts) == 1:
            raise ModelError("the connection broke", "connection", True)
        yield "lo"

    agent = Agent(
        "stream-flaky",
        "Greet.",
        model=FunctionModel(flaky, name="flaky"),
        retry=RetryPolicy(max_attempts=3, initial_interval=0.01),
    )
    events = listened(iter(rt.start(agent, "hi", id="streams/4").stream()))
    texts = [e for e in events if isinstance(e, TextDelta | TextDiscarded)]
    assert texts == [
        TextDelta(run="streams/4", step="streams/4/1", text="Hel"),
        TextDiscarded(run="streams/4", step="streams/4/1", text="Hel"),
        TextDelta(run="streams/4", step="streams/4/1", text="Hel"),
        TextDelta(run="streams/4", step="streams/4/1", text="lo", offset=3),
    ]
    assert events[-1] == RunEnded(run="streams/4", state="resolved", output="Hello")


def helper_text(request: ModelRequest) -> Any:
    return after_listening(["sub ", "answer"])


helper = Agent("stream-helper", "Help.", model=FunctionModel(helper_text, name="helper"))


def boss_text(request: ModelRequest) -> Any:
    if not any(m.role == "assistant" for m in request.messages):
        return reply("", call("stream-helper", "h1", input="part"))
    return after_listening(["done"])


boss = Agent("stream-boss", "Lead.", model=FunctionModel(boss_text, name="boss"), tools=[helper])


def test_a_sub_agents_events_come_nested_under_its_call(rt: Runtime) -> None:
    events = listened(iter(rt.start(boss, "go", id="streams/5").stream()))
    child = "streams/5/3"  # the sub-agent's run is its call step
    mine = [e for e in events if e.run == child]
    assert [type(e).__name__ for e in mine] == [
        "RunStarted",
        "TextDelta",
        "TextDelta",
        "ModelAnswered",
        "RunEnded",
    ]
    assert mine[0] == RunStarted(run=child, agent="stream-helper", input="part")
    assert mine[-1] == RunEnded(run=child, state="resolved", output="sub answer")
    assert events.index(mine[-1]) < len(events) - 1
    assert events[-1] == RunEnded(run="streams/5", state="resolved", output="done")


def test_an_agent_over_a_streaming_provider_streams_its_deltas(
    rt: Runtime, fake: FakeProvider
) -> None:
    fake.answer_stream(openai_stream(["one ", "two ", "three"]), delay=0.05)
    model = OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k")
    agent = Agent("stream-http", "Count.", model=model)
    # The provider sends a piece every 50 ms: the stream subscribed long before the first.
    events = list(rt.start(agent, "count", id="streams/6").stream())
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["one ", "two ", "three"]
    assert events[-1] == RunEnded(run="streams/6", state="resolved", output="one two three")


def test_a_reader_slower_than_the_model_gets_every_delta_before_the_whole_answer(
    rt: Runtime,
) -> None:
    handle = rt.start(adder, "2+3?", id="streams/7")
    events = iter(handle.stream())
    first = next(events)
    listening.set()  # the model speaks now; the reader reads on only once the run has ended
    assert handle.result(timeout=30) == "2 + 3 is 5."
    rest = [first, *events]
    deltas = [i for i, e in enumerate(rest) if isinstance(e, TextDelta)]
    answers = [i for i, e in enumerate(rest) if isinstance(e, ModelAnswered)]
    assert "".join(rest[i].text for i in deltas) == "2 + 3 is 5."
    assert max(deltas) < answers[-1], "the text comes before the whole answer"
    assert rest[-1] == RunEnded(run="streams/7", state="resolved", output="2 + 3 is 5.")


PIECES = [f"{i} " for i in range(40)]


async def quickly(pieces: list[str]) -> AsyncIterator[str]:
    await asyncio.to_thread(listening.wait, 10)
    for piece in pieces:
        yield piece
        await asyncio.sleep(0.001)  # a fast model: a chunk every millisecond or so


quick = Agent(
    "stream-quick", "Count.", model=FunctionModel(lambda r: quickly(PIECES), name="quick")
)


def test_another_process_gets_a_quick_models_text_whole_in_fewer_notifications(
    rt: Runtime, dsn: str
) -> None:
    # A stream on a store object of its own hears the text by NOTIFY, as another process
    # does. The announcer gathers what comes within ``LINGER`` into one round trip, and a
    # call's consecutive pieces into one notification: 40 chunks, a millisecond apart, are far
    # fewer notifications, and the text arrives whole and in order.
    with Store(dsn) as other:
        heard: list[str] = []
        other.subscribe(EventKind.LIVE, [""], lambda kind, key, resync: heard.append(key))
        handle = rt.start(quick, "count", id="streams/8")
        events = listened(iter(RunHandle(handle.id, other).stream()))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(e.text for e in deltas) == "".join(PIECES)
    assert [e.offset for e in deltas] == sorted(e.offset for e in deltas)
    assert events[-1] == RunEnded(run="streams/8", state="resolved", output="".join(PIECES))
    notified = [key for key in heard if key.startswith('{"k":"d"')]
    assert 1 <= len(notified) <= len(PIECES) // 2, notified


def test_a_stream_opened_in_this_process_mid_call_has_the_text_so_far_once(
    rt: Runtime, fake: FakeProvider
) -> None:
    fake.answer_stream(openai_stream(["one ", "two ", "three ", "four"]), delay=0.2)
    model = OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k")
    agent = Agent("stream-late", "Count.", model=model)
    handle = rt.start(agent, "count", id="streams/late")
    # Opened once two pieces are out: what it missed comes first, as one piece, then the rest.
    announcer = announcer_for(rt.store)
    eventually(
        lambda: any(i.x == "one two " for i in announcer.writing("streams/late")),
        timeout=10,
        what="two pieces written",
    )
    deltas = [e for e in handle.stream() if isinstance(e, TextDelta)]
    assert [(d.text, d.offset) for d in deltas] == [("one two ", 0), ("three ", 8), ("four", 14)]
    assert handle.result(timeout=30) == "one two three four"
    assert announcer.writing("streams/late") == []  # the answer is kept: nothing under way


def test_a_stream_on_the_handle_rt_start_gave_reads_nothing_before_the_first_text(
    rt: Runtime, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream's first read of the rows waits long here: the first text must not wait for it.
    monkeypatch.setattr(stream_module, "FIRST_LOOK", 5.0)
    fake.answer_stream(openai_stream(["one ", "two"]), delay=0.3)
    model = OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k")
    agent = Agent("stream-handle", "Count.", model=model)
    began = time.monotonic()
    handle = rt.start(agent, "count", id="streams/handle")
    reads = rt.store.reads
    events = iter(handle.stream())
    # The start, from the task this process wrote; the first piece, live: no read between.
    assert next(events) == RunStarted(run="streams/handle", agent="stream-handle", input="count")
    first = next(events)
    assert first == TextDelta(run="streams/handle", step="streams/handle/1", text="one ", offset=0)
    assert rt.store.reads == reads
    assert time.monotonic() - began < 2.5
    rest = list(events)
    assert [type(e).__name__ for e in rest] == ["TextDelta", "ModelAnswered", "RunEnded"]
    assert rest[-1] == RunEnded(run="streams/handle", state="resolved", output="one two")


def test_a_stream_on_the_handle_of_a_run_that_is_over_gives_all_in_order(rt: Runtime) -> None:
    # The run ends before its stream is read: the start comes from the task, the rest from
    # the rows, in order, each once (nothing of it is live any more).
    def answer(request: ModelRequest) -> Any:
        if not any(m.role == "assistant" for m in request.messages):
            return reply("", call("add", "c1", a=2, b=3))
        return "5."

    agent = Agent("stream-over", "Add.", model=FunctionModel(answer), tools=[add])
    handle = rt.start(agent, "2+3?", id="streams/over")
    assert handle.result(timeout=30) == "5."
    events = list(handle.stream())
    assert events == kept(events)
    assert [type(e).__name__ for e in events] == [
        "RunStarted",
        "ModelAnswered",
        "ToolStarted",
        "ToolFinished",
        "ModelAnswered",
        "RunEnded",
    ]


def test_a_stream_its_reader_leaves_stops_listening(rt: Runtime) -> None:
    # Each stream listens to every live event of the process: one left behind (a ``break``
    # out of the loop) would cost every later delta a call, for good.
    def listeners() -> int:
        return len(rt.store.events._subs.get((EventKind.LIVE, ""), {}))

    before = listeners()
    for i in range(3):
        for event in rt.start(adder, "2+3?", id=f"streams/left/{i}").stream():
            listening.set()
            if isinstance(event, ModelAnswered):
                break  # the reader has what it wanted
        listening.clear()
    assert listeners() == before
    stream = rt.start(adder, "2+3?", id="streams/left/closed").stream()
    events = iter(stream)
    assert isinstance(next(events), RunStarted)
    listening.set()
    assert listeners() == before + 1
    stream.close()  # or the reader lets go of it
    assert listeners() == before
    with pytest.raises(StopIteration):
        next(events)
