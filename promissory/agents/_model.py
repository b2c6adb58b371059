"""The ``Model`` interface, models for tests, and naming a model with a string.

A model is anything with a ``name`` and ``async complete(request) -> ModelResponse``; one that
also has ``stream(request)``, an async iterator of the answer's text as it is written and then
the whole ``ModelResponse``, is streamed (both HTTP adapters and ``FunctionModel`` are). Errors
are ``ModelError`` with a kind and ``retryable``; the agent's ``RetryPolicy``, not the adapter,
decides whether to try again. A streamed model with ``early_start = True`` (both HTTP adapters)
is asked a new run's first turn while ``rt.start`` keeps the run, and its first token comes a
commit sooner; that call is made outside the step (``current_step()`` is ``None`` in it), and
one made for a run that was then not kept is cut (``promissory.agents._early``).

``ScriptedModel`` answers from a list, by turn: the n-th answer goes to the request that holds
n-1 assistant messages, so a run resumed after a crash (which asks only for the turns not yet
kept) gets the same answers as an uninterrupted run. ``FunctionModel`` computes the answer
from the request.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidInputError
from ._chat import Message, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["FunctionModel", "Model", "ScriptedModel", "call", "model_from", "reply"]


@runtime_checkable
class Model(Protocol):
    """A language model the agent loop can call."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...


def reply(text: str = "", *calls: ToolCall, usage: Usage | None = None) -> ModelResponse:
    """A model answer of ``text`` and tool ``calls``, for scripts and function models."""
    return ModelResponse(
        message=Message.assistant(text, list(calls)),
        stop_reason="tool_calls" if calls else "end_turn",
        usage=usage or Usage(requests=1),
    )


def call(name: str, id: str | None = None, /, **arguments: Any) -> ToolCall:
    """A tool call for a scripted answer: ``call("search", query="durable actors")``."""
    return ToolCall(id=id or f"call-{uuid.uuid4().hex[:8]}", name=name, arguments=arguments)


ScriptItem = ModelResponse | str | Exception


class ScriptedModel:
    """A model that answers from a script, turn by turn (see the module docstring).

    Each item is a ``ModelResponse`` (see ``reply``), a string (a final text answer), or an
    exception to raise. ``calls`` counts the calls that reached the model; ``assert_used_up``
    checks that every answer was asked for.

    Example:
        >>> model = ScriptedModel([reply("", call("search", query="x")), "done"])

    """

    def __init__(self, script: Sequence[ScriptItem], *, name: str = "scripted") -> None:
        self.name = name
        self.script = list(script)
        self.calls = 0
        self.requests: list[ModelRequest] = []
        self._lock = threading.Lock()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """The scripted answer for this request's turn."""
        turn = sum(1 for m in request.messages if m.role == "assistant")
        with self._lock:
            self.calls += 1
            self.requests.append(request)
        if turn >= len(self.script):
            raise InvalidInputError(
                f"{self.name}: the script has {len(self.script)} answers and turn {turn + 1} "
                "asked for another"
            )
        item = self.script[turn]
        if isinstance(item, Exception):
            raise item
        if isinstance(item, str):
            return reply(item)
        return item

    def assert_used_up(self) -> None:
        """Fail unless the last turn asked for was the script's last answer."""
        asked = {sum(1 for m in r.messages if m.role == "assistant") for r in self.requests}
        if not asked or max(asked) != len(self.script) - 1:
            raise AssertionError(
                f"{self.name}: {len(self.script)} answers scripted, turns asked: {sorted(asked)}"
            )


FunctionAnswer = ModelResponse | str | Iterable[str] | AsyncIterable[str]
"""What a ``FunctionModel``'s function returns: an answer, a text, or a text in pieces."""


class FunctionModel:
    """A model whose answer is ``fn(request)``: a ``ModelResponse``, a text, or the text in
    pieces (an iterable or async iterable of strings, such as a generator), which ``stream``
    yields one by one as a provider streams its deltas.

    Example:
        >>> def words(request):
        ...     yield from ["Hello", ", ", "world"]
        >>> model = FunctionModel(words, name="words")

    """

    def __init__(self, fn: Callable[[ModelRequest], FunctionAnswer], *, name: str = "function"):
        self.name = name
        self.fn = fn
        self.calls = 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Call the function (a text in pieces is joined)."""
        answer: ModelResponse | None = None
        pieces: list[str] = []
        async for item in self.stream(request):
            if isinstance(item, ModelResponse):
                answer = item
            else:
                pieces.append(item)
        assert answer is not None
        return answer

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Call the function; yield its text as it gives it, then the whole answer."""
        self.calls += 1
        result = self.fn(request)
        if isinstance(result, ModelResponse):
            if result.message.text:
                yield result.message.text
            yield result
            return
        if isinstance(result, str):
            if result:
                yield result
            yield reply(result)
            return
        pieces: list[str] = []
        if isinstance(result, AsyncIterable):
            async for piece in result:
                pieces.append(piece)
                yield piece
        else:
            for piece in result:
                pieces.append(piece)
                yield piece
        yield reply("".join(pieces))


def model_from(spec: Model | str) -> Model:
    """A model from an object (returned as it is) or a string.

    Strings: ``"openai:gpt-4o-mini"``, ``"anthropic:claude-sonnet-4-5"``,
    ``"ollama:llama3.2"`` (``$OLLAMA_HOST`` or localhost), or an OpenAI-compatible server as
    ``"http://host:port/v1#model"``. API keys come from ``OPENAI_API_KEY`` and
    ``ANTHROPIC_API_KEY``.
    """
    if not isinstance(spec, str):
        if not isinstance(spec, Model):
            raise InvalidInputError(
                f"a model is a Model (with name and async complete) or a string, not {spec!r}"
            )
        return spec
    from ._anthropic import AnthropicModel
    from ._openai import OpenAIChatModel

    if spec.startswith(("http://", "https://")):
        base_url, _, model = spec.partition("#")
        if not model:
            raise InvalidInputError(f"name the model after '#': {spec}#model-name")
        return OpenAIChatModel(model, base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY"))
    provider, _, model = spec.partition(":")
    if not model:
        raise InvalidInputError(
            f"a model string is provider:model (openai, anthropic, ollama) or a URL, not {spec!r}"
        )
    if provider == "openai":
        return OpenAIChatModel(model)
    if provider == "anthropic":
        return AnthropicModel(model)
    if provider == "ollama":
        host = os.environ.get("OLLAMA_HOST", "http://localhost:11434")
        if not host.startswith("http"):
            host = "http://" + host
        return OpenAIChatModel(model, base_url=host.rstrip("/") + "/v1", api_key="ollama")
    raise InvalidInputError(f"unknown model provider {provider!r} in {spec!r}")
