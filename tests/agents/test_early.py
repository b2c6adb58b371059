"""A new run's first model call, begun while the run is being kept (``promissory.agents._early``):
made before the run's handler has its task, read by the run's first step as its answer, never
made for a run that is joined, and cut when its run is not kept or its handler never comes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import promissory.actors._ref as ref_module
from promissory.actors import RetryPolicy
from promissory.agents import (
    Agent,
    AnthropicModel,
    ModelRequest,
    OpenAIChatModel,
    RunHandle,
    RunStarted,
    RunTask,
    TextDelta,
    TextDiscarded,
    _early,
)
from promissory.errors import StoreError
from promissory.runtime import Runtime
from promissory.store import EventKind, PromiseKind
from tests.agents.fake_llm import (
    Answer,
    FakeProvider,
    Recorded,
    anthropic_stream,
    openai_error,
    openai_stream,
)
from tests.kit import eventually

SLOW = 0.1
"""Seconds between two pieces of a slow answer (one cut mid-way is seen by the server)."""


def early_listeners(rt: Runtime, run: str) -> list[Any]:
    """The early calls' listeners to run ``run``'s end (``_early.offer``)."""
    subs = rt.store.events._subs.get((EventKind.SETTLED, run), {})
    return [cb for cb in subs.values() if getattr(cb, "__qualname__", "").startswith("offer.")]


def model(fake: FakeProvider) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="k")


class Reader:
    """A stream of run ``run_id``, read on a thread of its own from before the run starts."""

    def __init__(self, rt: Runtime, run_id: str) -> None:
        self.events: list[Any] = []
        self.started = threading.Event()
        """Set at the run's ``RunStarted``: the stream is listening."""
        self._thread = threading.Thread(target=self._read, args=(rt, run_id), daemon=True)
        self._thread.start()

    def _read(self, rt: Runtime, run_id: str) -> None:
        for event in RunHandle(run_id, rt.store).stream():
            self.events.append(event)
            if isinstance(event, RunStarted):
                self.started.set()

    def text(self) -> list[Any]:
        self._thread.join(30)
        return [e for e in self.events if isinstance(e, TextDelta | TextDiscarded)]


def after(reader: Reader, events: list[tuple[str | None, Any]]) -> Callable[[Recorded], Answer]:
    """A streamed answer sent once ``reader`` listens (text sent before is never seen)."""

    def answer(request: Recorded) -> Answer:
        reader.started.wait(10)
        return Answer(events=tuple(events))

    return answer


def test_the_first_turn_is_asked_before_the_handler_has_its_task(
    rt: Runtime, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = Reader(rt, "early/1")
    fake.answer_with(after(reader, openai_stream(["Hel", "lo"])))
    agent = Agent("early-first", "Be brief.", model=model(fake))
    asked: list[bool] = []
    reached = ref_module.reached

    def committed(point: str, *args: Any) -> None:
        # The run is kept, and its handler is not yet handed its task (``sent`` does that):
        # the model was asked already, or never would be before the handler asks it.
        if point == "message.committed":
            deadline = time.monotonic() + 5
            while not fake.requests and time.monotonic() < deadline:
                time.sleep(0.005)
            asked.append(bool(fake.requests))
        reached(point, *args)

    monkeypatch.setattr(ref_module, "reached", committed)
    handle = rt.start(agent, "hello", id="early/1")
    assert asked == [True]
    assert handle.result(timeout=30) == "Hello"
    assert [e.text for e in reader.text()] == ["Hel", "lo"]
    # One call, the one a run makes at its first turn, kept as the run's model step.
    assert len(fake.requests) == 1
    body = fake.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    steps = [p for p in rt.store.timeline("early/1") if p.kind is PromiseKind.STEP]
    assert [p.fingerprint.split(":")[1] for p in steps] == ["model"]


def test_a_struct_input_is_asked_as_its_handler_will_have_it(
    rt: Runtime, fake: FakeProvider
) -> None:
    fake.answer_stream(openai_stream(["ok"]))
    agent = Agent("early-dict", "Sort.", model=model(fake))
    task = RunTask(agent="x", input=[3, 1, 2])  # any Struct input: a dict for the handler
    assert rt.start(agent, task, id="early/dict").result(timeout=30) == "ok"
    assert len(fake.requests) == 1  # the early call was the one read: no second call
    user = fake.requests[0].body["messages"][1]["content"]
    assert user == '{"agent":"x","input":[3,1,2]}'


def test_a_start_that_joins_a_run_asks_the_model_nothing_ahead(
    rt: Runtime, fake: FakeProvider
) -> None:
    fake.answer_stream(openai_stream(["a", "b", "c"]), delay=SLOW)
    agent = Agent("early-join", "Be brief.", model=model(fake))
    first = rt.start(agent, "hello", id="early/2")
    eventually(lambda: fake.requests, what="the first start's call")
    again = rt.start(agent, "hello", id="early/2")  # under way: joined
    assert again.reused
    assert first.result(timeout=30) == "abc"
    assert rt.start(agent, "hello", id="early/2").reused  # finished: joined
    assert again.result(timeout=30) == "abc"
    assert len(fake.requests) == 1
    assert fake.cut == 0


def test_the_early_call_of_a_run_whose_commit_fails_is_cut(
    rt: Runtime, fake: FakeProvider, dsn: str
) -> None:
    # The database refuses the run at COMMIT, after its statement was answered (and the model
    # asked): a deferred check on the actors table.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION refuse_run() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.id = 'early/3' THEN
                    PERFORM pg_sleep(0.5);  -- the model is asked meanwhile
                    RAISE EXCEPTION 'no run early/3';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_run AFTER INSERT ON actors
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_run();
            """
        )
    fake.answer_stream(openai_stream(list("abcdefghij")), delay=SLOW)
    agent = Agent("early-refused", "Be brief.", model=model(fake))
    with pytest.raises(StoreError, match="no run early/3"):
        rt.start(agent, "hello", id="early/3")
    assert rt.store.find("early/3") is None
    # Asked while the COMMIT was on its way, then cut mid-answer: nothing waits for it.
    assert len(fake.requests) == 1
    eventually(lambda: fake.cut == 1, timeout=5, what="the call cut")
    assert not [key for key in _early._waiting if key[1] == "early/3"]


def made_call(
    rt: Runtime, fake: FakeProvider, name: str, run: str
) -> tuple[Agent, RunTask, _early.EarlyCall]:
    """An early call for run ``run``, offered and made (no run is started): the provider has
    its request, and answers slowly."""
    fake.answer_stream(openai_stream(list("abcdefghij")), delay=SLOW)
    agent = Agent(name, "Be brief.", model=model(fake))
    task = RunTask(agent=agent.name, input="hello", model=agent.model.name)
    call = _early.EarlyCall(rt.loop, agent, run, task, ModelRequest(system="", messages=[]))
    _early.offer(rt.store, call)
    call.begin()
    eventually(lambda: fake.requests, timeout=5, what="the call made")
    return agent, task, call


def test_an_early_call_its_handler_does_not_come_for_is_cut(
    rt: Runtime, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_early, "EARLY_TTL", 0.3)
    agent, task, call = made_call(rt, fake, "early-left", "early/4")
    eventually(lambda: fake.cut == 1, timeout=5, what="the call cut after EARLY_TTL")
    assert _early.take(rt.store, "early/4", agent, task) is None
    assert not call.read(call.step)


def test_a_run_canceled_at_once_makes_no_call_that_outlives_it(
    rt: Runtime, fake: FakeProvider
) -> None:
    fake.answer_stream(openai_stream(list("abcdefghij")), delay=SLOW)
    agent = Agent("early-canceled", "Be brief.", model=model(fake))
    handle = rt.start(agent, "hello", id="early/8")
    rt.cancel("early/8")
    with pytest.raises(Exception):  # noqa: B017 (canceled: whichever error says so)
        handle.result(timeout=30)
    # Never made, or read by its step, or cut when the run ended: nothing waits 60 s.
    assert not [key for key in _early._waiting if key[1] == "early/8"]
    assert not early_listeners(rt, "early/8")


def test_an_early_call_whose_run_ends_before_its_handler_comes_is_cut_then(
    rt: Runtime, fake: FakeProvider
) -> None:
    agent, task, call = made_call(rt, fake, "early-ended", "early/9")
    # The run's promise ends (here: made and canceled directly) with no handler come.
    rt.store.create("early/9")
    rt.store.cancel("early/9", "canceled before its handler came")
    eventually(lambda: fake.cut == 1, timeout=5, what="the call cut when the run ended")
    assert _early.take(rt.store, "early/9", agent, task) is None
    assert not early_listeners(rt, "early/9")


def test_a_retry_of_the_first_turn_asks_the_model_anew(rt: Runtime, fake: FakeProvider) -> None:
    fake.answer(openai_error("overloaded", "server_error"), status=500)
    fake.answer_stream(openai_stream(["fine"]))
    agent = Agent(
        "early-retry",
        "Be brief.",
        model=model(fake),
        retry=RetryPolicy(max_attempts=2, initial_interval=0.01),
    )
    assert rt.start(agent, "hello", id="early/5").result(timeout=30) == "fine"
    # The early call was the first attempt (it failed); the retry was a call of its own.
    assert len(fake.requests) == 2
    assert fake.requests[0].body == fake.requests[1].body


def test_text_of_an_early_call_that_failed_mid_way_is_discarded_and_asked_again(
    rt: Runtime, fake: FakeProvider
) -> None:
    events = anthropic_stream(["Half"])[:4]
    events.append(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    )
    reader = Reader(rt, "early/7")
    fake.answer_with(after(reader, events))
    fake.answer_stream(anthropic_stream(["Whole"]))
    agent = Agent(
        "early-half",
        "Be brief.",
        model=AnthropicModel("claude-test", base_url=fake.anthropic_url, api_key="k"),
        retry=RetryPolicy(max_attempts=2, initial_interval=0.01),
    )
    handle = rt.start(agent, "hello", id="early/7")
    assert handle.result(timeout=30) == "Whole"
    seen = reader.text()
    step = "early/7/1"
    assert seen == [
        TextDelta(run="early/7", step=step, text="Half", offset=0),
        TextDiscarded(run="early/7", step=step, text="Half"),
        TextDelta(run="early/7", step=step, text="Whole", offset=0),
    ]
    assert len(fake.requests) == 2


def test_a_model_that_does_not_say_so_is_asked_by_the_handler_only(rt: Runtime) -> None:
    from promissory.agents import FunctionModel

    agent = Agent("early-not", "Be brief.", model=FunctionModel(lambda request: "done"))
    assert not _early.early_start(agent.model)
    assert rt.start(agent, "hello", id="early/6").result(timeout=30) == "done"
    assert not [key for key in _early._waiting if key[1] == "early/6"]
