"""The model adapters against a fake provider on loopback: wire formats, usage, errors.

Each test runs the adapter's ``complete`` with ``asyncio.run`` against ``FakeProvider``
(tests/agents/fake_llm.py), which answers in the provider's wire format and records what it
was sent. The last tests run an agent on a runtime with the adapter as its model.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from promissory.actors import RetryPolicy
from promissory.agents import (
    Agent,
    AnthropicModel,
    Message,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OpenAIChatModel,
    TextPart,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
    model_from,
)
from promissory.errors import ModelError
from promissory.runtime import Runtime
from tests.actors.kit import sql

from .fake_llm import (
    FakeProvider,
    anthropic_answer,
    anthropic_error,
    openai_answer,
    openai_error,
)


@dataclass(frozen=True)
class Provider:
    """How to talk to one provider's fake: its model, and answers in its wire format."""

    name: str
    make: Callable[..., Any]
    text: Callable[..., Any]
    tools: Callable[[list[tuple[str, str, dict[str, Any]]]], Any]
    error: Callable[[str, str], Any]


OPENAI = Provider(
    "openai",
    lambda fake, **kw: OpenAIChatModel("gpt-test", base_url=fake.openai_url, api_key="test", **kw),
    lambda text, **kw: openai_answer(text, **kw),
    lambda calls: openai_answer(None, [(i, n, json.dumps(a)) for i, n, a in calls]),
    lambda message, type: openai_error(message, type),
)
ANTHROPIC = Provider(
    "anthropic",
    lambda fake, **kw: AnthropicModel(
        "claude-test", base_url=fake.anthropic_url, api_key="test", **kw
    ),
    lambda text, **kw: anthropic_answer(text, **kw),
    lambda calls: anthropic_answer(None, calls),
    lambda message, type: anthropic_error(message, type),
)
PROVIDERS = [OPENAI, ANTHROPIC]

WEATHER = ToolSpec(
    "weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def ask(model: Any, *messages: Message, system: str = "Be brief.", **kw: Any) -> ModelResponse:
    request = ModelRequest(
        system=system, messages=list(messages) or [Message.user("Hi")], tools=[WEATHER], **kw
    )
    response: ModelResponse = asyncio.run(model.complete(request))
    return response


def failure(model: Any) -> ModelError:
    with pytest.raises(ModelError) as info:
        ask(model)
    return info.value


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_a_plain_text_answer(fake: FakeProvider, p: Provider) -> None:
    fake.answer(p.text("Hello there."))
    response = ask(p.make(fake), Message.user("Say hello."))
    assert response.message == Message("assistant", [TextPart("Hello there.")])
    assert response.message.tool_calls == []
    assert response.stop_reason == "end_turn"
    assert response.model in ("gpt-test-2025", "claude-test-4")
    assert response.usage.requests == 1
    [sent] = fake.requests
    body = sent.body
    if p is OPENAI:
        assert sent.path == "/v1/chat/completions"
        assert sent.headers["authorization"] == "Bearer test"
        assert body["model"] == "gpt-test"
        assert body["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello."},
        ]
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "The weather in a city.",
                    "parameters": WEATHER.parameters,
                },
            }
        ]
    else:
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == "test"
        assert sent.headers["anthropic-version"] == "2023-06-01"
        assert body["model"] == "claude-test"
        assert body["system"] == "Be brief."
        assert body["max_tokens"] == 4096  # required by the API
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}
        ]
        assert body["tools"] == [
            {
                "name": "weather",
                "description": "The weather in a city.",
                "input_schema": WEATHER.parameters,
            }
        ]


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_a_tool_call(fake: FakeProvider, p: Provider) -> None:
    fake.answer(p.tools([("call_1", "weather", {"city": "Paris"})]))
    response = ask(p.make(fake))
    assert response.message.tool_calls == [
        ToolCall(id="call_1", name="weather", arguments={"city": "Paris"})
    ]
    assert response.message.text == ""
    assert response.stop_reason == "tool_calls"


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_parallel_tool_calls_keep_the_model_order(fake: FakeProvider, p: Provider) -> None:
    fake.answer(
        p.tools(
            [
                ("call_b", "weather", {"city": "Berlin"}),
                ("call_a", "weather", {"city": "Athens"}),
            ]
        )
    )
    response = ask(p.make(fake))
    assert [(c.id, c.arguments["city"]) for c in response.message.tool_calls] == [
        ("call_b", "Berlin"),
        ("call_a", "Athens"),
    ]


def _conversation() -> list[Message]:
    return [
        Message.user("Weather in Berlin and Athens?"),
        Message.assistant(
            "Checking both.",
            [
                ToolCall(id="call_b", name="weather", arguments={"city": "Berlin"}),
                ToolCall(id="call_a", name="weather", arguments={"city": "Athens"}),
            ],
        ),
        Message(
            "tool",
            [
                ToolResult(call_id="call_b", name="weather", content="rain, 12 C"),
                ToolResult(call_id="call_a", name="weather", content="no such city", is_error=True),
            ],
        ),
    ]


def test_openai_tool_results_go_back_one_tool_message_per_result(fake: FakeProvider) -> None:
    fake.answer(openai_answer("Rain in Berlin."))
    ask(OPENAI.make(fake), *_conversation())
    assert fake.requests[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Berlin and Athens?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Berlin"}'},
                },
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Athens"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": "rain, 12 C"},
        {"role": "tool", "tool_call_id": "call_a", "content": "no such city"},
    ]


def test_openai_an_assistant_turn_of_only_tool_calls_has_null_content(
    fake: FakeProvider,
) -> None:
    fake.answer(openai_answer("ok"))
    call = ToolCall(id="c1", name="weather", arguments={"city": "Oslo"})
    ask(OPENAI.make(fake), Message.user("Oslo?"), Message.assistant("", [call]))
    assistant = fake.requests[0].body["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["content"] is None
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1"]


def test_anthropic_tool_results_go_back_in_one_user_message_results_first(
    fake: FakeProvider,
) -> None:
    fake.answer(anthropic_answer("Rain in Berlin."))
    # A correction after the results (a user text) joins the same user message, after them.
    ask(ANTHROPIC.make(fake), *_conversation(), Message.user("Answer in one line."))
    assert fake.requests[0].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Berlin and Athens?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "call_b",
                    "name": "weather",
                    "input": {"city": "Berlin"},
                },
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "weather",
                    "input": {"city": "Athens"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "call_b",
                    "content": "rain, 12 C",
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "call_a",
                    "content": "no such city",
                    "is_error": True,
                },
                {"type": "text", "text": "Answer in one line."},
            ],
        },
    ]


def test_settings_reach_the_wire(fake: FakeProvider) -> None:
    settings = ModelSettings(max_tokens=99, temperature=0.5, seed=7, parallel_tool_calls=False)
    fake.answer(openai_answer("a")).answer(anthropic_answer("b"))
    ask(OPENAI.make(fake), settings=settings)
    ask(ANTHROPIC.make(fake), settings=settings)
    openai, anthropic = (r.body for r in fake.requests)
    assert (openai["max_tokens"], openai["temperature"], openai["seed"]) == (99, 0.5, 7)
    assert openai["parallel_tool_calls"] is False
    assert (anthropic["max_tokens"], anthropic["temperature"]) == (99, 0.5)
    assert anthropic["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# -- usage ------------------------------------------------------------------------------------


def test_openai_usage_counts_cached_tokens_apart_from_input(fake: FakeProvider) -> None:
    fake.answer(
        openai_answer(
            "x",
            usage={
                "prompt_tokens": 1000,
                "completion_tokens": 50,
                "total_tokens": 1050,
                "prompt_tokens_details": {"cached_tokens": 600, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 10},
            },
        )
    )
    usage = ask(OPENAI.make(fake)).usage
    assert usage == Usage(
        requests=1, input_tokens=400, output_tokens=50, cache_read_tokens=600, cache_write_tokens=0
    )
    assert usage.total_tokens == 1050


def test_openai_usage_without_details_or_without_usage(fake: FakeProvider) -> None:
    answer = openai_answer("x", usage={"prompt_tokens": 7, "completion_tokens": 3})
    fake.answer(answer)
    assert ask(OPENAI.make(fake)).usage == Usage(requests=1, input_tokens=7, output_tokens=3)
    del answer["usage"]
    fake.answer(answer)
    assert ask(OPENAI.make(fake)).usage == Usage(requests=1)


def test_anthropic_usage_keeps_cache_reads_and_writes_apart(fake: FakeProvider) -> None:
    fake.answer(
        anthropic_answer(
            "x",
            usage={
                "input_tokens": 20,
                "output_tokens": 30,
                "cache_read_input_tokens": 500,
                "cache_creation_input_tokens": 80,
                "service_tier": "standard",
            },
        )
    )
    usage = ask(ANTHROPIC.make(fake)).usage
    assert usage == Usage(
        requests=1,
        input_tokens=20,
        output_tokens=30,
        cache_read_tokens=500,
        cache_write_tokens=80,
    )
    assert usage.total_tokens == 630


# -- odd answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", '"Paris"'])
def test_openai_malformed_arguments_are_kept_raw_and_sent_back_as_they_were(
    fake: FakeProvider, arguments: str
) -> None:
    fake.answer(openai_answer(None, [("call_1", "weather", arguments)]))
    response = ask(OPENAI.make(fake))
    [call] = response.message.tool_calls
    assert call == ToolCall(id="call_1", name="weather", arguments={}, raw_arguments=arguments)
    # Replayed to the model as written, so it can see what it got wrong.
    fake.answer(openai_answer("sorry"))
    ask(OPENAI.make(fake), Message.user("Hi"), response.message)
    sent = fake.requests[1].body["messages"][2]["tool_calls"][0]["function"]
    assert sent == {"name": "weather", "arguments": arguments}


def test_openai_a_tool_call_without_an_id_is_given_one(fake: FakeProvider) -> None:
    answer = openai_answer(None, [("", "weather", '{"city": "Rome"}')])
    del answer["choices"][0]["message"]["tool_calls"][0]["id"]
    fake.answer(answer)
    [call] = ask(OPENAI.make(fake)).message.tool_calls
    assert call.id and call.name == "weather" and call.arguments == {"city": "Rome"}


def test_an_answer_without_choices_or_content_is_malformed_output(fake: FakeProvider) -> None:
    fake.answer({"id": "x", "choices": []}).answer({"type": "message"})
    assert failure(OPENAI.make(fake)).kind == "malformed_output"
    assert failure(ANTHROPIC.make(fake)).kind == "malformed_output"


# -- errors -----------------------------------------------------------------------------------

# (status, headers, message, error type, kind, retryable, retry_after)
ERRORS = [
    (429, {"retry-after": "7"}, "Rate limit reached", "rate_limit_error", "rate_limit", True, 7.0),
    (429, {"retry-after": "0.5"}, "Slow down", "rate_limit_error", "rate_limit", True, 0.5),
    (429, {}, "Rate limit reached", "rate_limit_error", "rate_limit", True, None),
    (500, {}, "Internal server error", "api_error", "server", True, None),
    (503, {"retry-after": "3"}, "Service unavailable", "api_error", "server", True, 3.0),
    (529, {}, "Overloaded", "overloaded_error", "server", True, None),
    (401, {}, "Incorrect API key provided", "authentication_error", "auth", False, None),
    (403, {}, "Your key may not use this model", "permission_error", "auth", False, None),
    (
        400,
        {},
        "This model's maximum context length is 8192 tokens. However, your messages resulted "
        "in 9000 tokens.",
        "invalid_request_error",
        "context_length",
        False,
        None,
    ),
    (
        400,
        {},
        "Input exceeds the context window of this model",
        "invalid_request_error",
        "context_length",
        False,
        None,
    ),
    (
        400,
        {},
        "messages.1: tool_use ids must be unique",
        "invalid_request_error",
        "bad_request",
        False,
        None,
    ),
    (404, {}, "The model does not exist", "not_found_error", "bad_request", False, None),
]


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    ("status", "headers", "message", "type", "kind", "retryable", "retry_after"),
    ERRORS,
    ids=[f"{e[0]}-{e[4]}-{i}" for i, e in enumerate(ERRORS)],
)
def test_http_errors_are_classified(
    fake: FakeProvider,
    p: Provider,
    status: int,
    headers: dict[str, str],
    message: str,
    type: str,
    kind: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    fake.answer(p.error(message, type), status=status, headers=headers)
    error = failure(p.make(fake))
    assert (error.kind, error.retryable, error.retry_after, error.status) == (
        kind,
        retryable,
        retry_after,
        status,
    )
    assert message in str(error)
    assert p.name in str(error)


def test_bodies_that_are_not_json(fake: FakeProvider) -> None:
    fake.answer_raw(b"<html>502 Bad Gateway</html>", status=502)
    error = failure(OPENAI.make(fake))
    assert (error.kind, error.retryable, error.status) == ("server", True, 502)
    assert "502 Bad Gateway" in str(error)
    fake.answer_raw(b"<html>all good</html>", status=200)
    error = failure(ANTHROPIC.make(fake))
    assert (error.kind, error.retryable) == ("malformed_output", True)


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_a_server_that_never_answers_is_a_timeout(fake: FakeProvider, p: Provider) -> None:
    fake.hang()
    started = time.monotonic()
    error = failure(p.make(fake, timeout=0.3))
    assert time.monotonic() - started < 5
    assert (error.kind, error.retryable, error.status) == ("timeout", True, None)


def test_a_server_that_is_not_there_is_a_connection_error(fake: FakeProvider) -> None:
    port = fake.port
    fake.close()
    model = OpenAIChatModel("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="test")
    error = failure(model)
    assert (error.kind, error.retryable) == ("connection", True)


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_no_api_key_fails_before_any_request(
    fake: FakeProvider, p: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    model = (
        OpenAIChatModel("m", base_url=fake.openai_url)
        if p is OPENAI
        else AnthropicModel("m", base_url=fake.anthropic_url)
    )
    error = failure(model)
    assert (error.kind, error.retryable) == ("auth", False)
    assert fake.requests == []


def test_model_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k2")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:11434")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    openai = model_from("openai:gpt-4o-mini")
    assert isinstance(openai, OpenAIChatModel)
    assert (openai.model, openai.api_key, openai.base_url) == (
        "gpt-4o-mini",
        "k1",
        "https://api.openai.com/v1",
    )
    anthropic = model_from("anthropic:claude-sonnet-4-5")
    assert isinstance(anthropic, AnthropicModel) and anthropic.api_key == "k2"
    ollama = model_from("ollama:llama3.2")
    assert isinstance(ollama, OpenAIChatModel)
    assert ollama.base_url == "http://127.0.0.1:11434/v1"
    local = model_from("http://127.0.0.1:8080/v1#qwen")
    assert isinstance(local, OpenAIChatModel)
    assert (local.model, local.base_url) == ("qwen", "http://127.0.0.1:8080/v1")


# -- on a runtime -----------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


@pytest.mark.parametrize("p", PROVIDERS, ids=lambda p: p.name)
def test_an_agent_over_http_calls_a_tool_then_answers(
    fake: FakeProvider, p: Provider, rt: Runtime, dsn: str
) -> None:
    agent = Agent(f"http_adder_{p.name}", "You add.", p.make(fake), tools=[add])
    fake.answer(p.tools([("call_1", "add", {"a": 2, "b": 3})]))
    fake.answer(p.text("2 + 3 = 5"))
    answer = rt.run(agent, "What is 2 + 3?", id=f"agent/run/http-{p.name}", timeout=30)
    assert answer == "2 + 3 = 5"
    assert len(fake.requests) == 2
    second = fake.requests[1].body
    if p is OPENAI:
        assert second["messages"][0] == {"role": "system", "content": "You add."}
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
        assert second["tools"][0]["function"]["parameters"]["properties"]["a"] == {
            "type": "integer",
            "description": "the first.",
        }
    else:
        assert second["system"] == "You add."
        assert second["messages"][-1] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "5", "is_error": False}
            ],
        }
    steps = sql(
        dsn,
        "SELECT id, state, fingerprint FROM promises WHERE id LIKE %s ORDER BY created_at",
        f"agent/run/http-{p.name}/%",
    )
    assert [(s[0].rsplit("/", 1)[1], s[1], s[2].split(":")[1]) for s in steps] == [
        ("1", "resolved", "model"),
        ("2", "resolved", "tool"),
        ("3", "resolved", "model"),
    ]


def test_a_rate_limited_model_step_is_retried_and_succeeds(
    fake: FakeProvider, rt: Runtime, dsn: str
) -> None:
    retry = RetryPolicy(max_attempts=3, initial_interval=0.02, jitter=0.0)
    agent = Agent("http_retry", "Answer.", OPENAI.make(fake), retry=retry)
    fake.answer(
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        status=429,
        headers={"retry-after": "0.2"},
    )
    fake.answer(openai_answer("fine now"))
    started = time.monotonic()
    assert rt.run(agent, "Hello?", id="agent/run/http-retry", timeout=30) == "fine now"
    assert time.monotonic() - started >= 0.2, "the server's retry-after is a floor"
    assert len(fake.requests) == 2
    assert fake.requests[0].body == fake.requests[1].body
    [(state, attempt)] = sql(
        dsn, "SELECT state, attempt FROM promises WHERE id = 'agent/run/http-retry/1'"
    )
    assert (state, attempt) == ("resolved", 2)


def test_a_non_retryable_model_error_fails_the_run_at_once(fake: FakeProvider, rt: Runtime) -> None:
    retry = RetryPolicy(max_attempts=5, initial_interval=0.02)
    agent = Agent("http_auth", "Answer.", OPENAI.make(fake), retry=retry)
    fake.answer(openai_error("Incorrect API key provided", code="invalid_api_key"), status=401)
    with pytest.raises(ModelError) as info:
        rt.run(agent, "Hello?", id="agent/run/http-auth", timeout=30)
    assert info.value.kind == "auth"
    assert len(fake.requests) == 1
