"""``OpenAIChatModel``: the Chat Completions wire format, for OpenAI and compatible servers.

One adapter covers OpenAI, Ollama, vLLM, llama.cpp's server, LM Studio and the hosted
OpenAI-compatible APIs: ``base_url`` + ``api_key`` + ``model``. Tool-call arguments arrive as a
JSON string; one that does not parse is kept raw, so the loop can tell the model. ``stream``
reads the same answer as server-sent chunks, yielding its text as it comes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ..errors import ModelError
from ._chat import (
    Message,
    ModelRequest,
    ModelResponse,
    Part,
    TextPart,
    ToolCall,
    Usage,
)
from ._http import post_json, post_sse

_STOP = {"stop": "end_turn", "tool_calls": "tool_calls", "length": "max_tokens"}


class OpenAIChatModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the model's name at the provider.
        base_url: the API root (default ``$OPENAI_BASE_URL`` or OpenAI's).
        api_key: the key (default ``$OPENAI_API_KEY``).
        timeout: seconds for one call.

    Example:
        >>> OpenAIChatModel("llama3.2", base_url="http://localhost:11434/v1", api_key="x")
        OpenAIChatModel('llama3.2' at http://localhost:11434/v1)

    """

    early_start = True
    """A new run's first turn is asked while the run is kept (``promissory.agents._early``)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.model = model
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.name = f"openai:{model}"

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.model!r} at {self.base_url})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one Chat Completions request."""
        if not self.api_key:
            raise ModelError(
                f"{self.name}: no API key (set OPENAI_API_KEY)", "auth", retryable=False
            )
        headers = {"Authorization": f"Bearer {self.api_key}"}
        body = to_wire(self.model, request)
        data = await post_json(
            self.base_url, "/chat/completions", body, headers, self.timeout, self.name
        )
        return from_wire(data, self.name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Send one Chat Completions request with ``stream: true``: yield the answer's text as
        it arrives, then the whole answer (tool calls and usage included).
        """
        if not self.api_key:
            raise ModelError(
                f"{self.name}: no API key (set OPENAI_API_KEY)", "auth", retryable=False
            )
        headers = {"Authorization": f"Bearer {self.api_key}"}
        body = to_wire(self.model, request)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        answer = StreamedAnswer()
        events = post_sse(
            self.base_url, "/chat/completions", body, headers, self.timeout, self.name
        )
        async for kind, chunk in events:
            if kind == "json":  # the server answered whole, without streaming
                whole = from_wire(chunk, self.name)
                if whole.message.text:
                    yield whole.message.text
                yield whole
                return
            text = answer.add(chunk)
            if text:
                yield text
        yield from_wire(answer.whole(), self.name)


class StreamedAnswer:
    """Chat Completions chunks put back together into one answer, as ``from_wire`` reads it:
    the text, the tool calls (by ``index``: the id and name come first, the arguments in
    pieces), the finish reason, and the usage of the last chunk.
    """

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.usage: Any = None
        self.model: str | None = None

    def add(self, chunk: Any) -> str:
        """Take one chunk; return the text it adds."""
        if not isinstance(chunk, dict):
            return ""
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        added = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                added += delta["content"]
            for raw in delta.get("tool_calls") or ():
                call = self.calls.setdefault(raw.get("index", 0), {"function": {}})
                if raw.get("id"):
                    call["id"] = raw["id"]
                function = raw.get("function") or {}
                if function.get("name"):
                    call["function"]["name"] = function["name"]
                if function.get("arguments"):
                    call["function"]["arguments"] = (
                        call["function"].get("arguments", "") + function["arguments"]
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if added:
            self.text.append(added)
        return added

    def whole(self) -> dict[str, Any]:
        """The answer as a non-streamed Chat Completions body."""
        message: dict[str, Any] = {"content": "".join(self.text) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {
            "choices": [{"message": message, "finish_reason": self.finish or "stop"}],
            "usage": self.usage,
            "model": self.model,
        }


def to_wire(model: str, request: ModelRequest) -> dict[str, Any]:
    """The Chat Completions request body for ``request``."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "tool":
            for result in message.tool_results:
                messages.append(
                    {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
                )
        elif message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            calls = message.tool_calls
            if calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "arguments": c.raw_arguments
                            if c.raw_arguments is not None
                            else msgspec.json.encode(c.arguments).decode(),
                        },
                    }
                    for c in calls
                ]
            messages.append(entry)
        else:
            messages.append({"role": message.role, "content": message.text})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    settings = request.settings
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = settings.parallel_tool_calls
    return body


def from_wire(data: Any, name: str) -> ModelResponse:
    """A ``ModelResponse`` from a Chat Completions answer."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelError(
            f"{name}: no choices in the answer: {str(data)[:200]}", "malformed_output"
        ) from exc
    parts: list[Part] = []
    if message.get("content"):
        parts.append(TextPart(message["content"]))
    for raw in message.get("tool_calls") or ():
        function = raw.get("function") or {}
        arguments_text = function.get("arguments") or "{}"
        try:
            arguments = msgspec.json.decode(arguments_text)
            raw_arguments = None
            if not isinstance(arguments, dict):
                arguments, raw_arguments = {}, arguments_text
        except msgspec.DecodeError:
            arguments, raw_arguments = {}, arguments_text
        parts.append(
            ToolCall(
                # Some compatible servers omit the id: make one up, stable within the turn.
                id=raw.get("id") or f"call-{uuid.uuid4().hex[:8]}",
                name=function.get("name", ""),
                arguments=arguments,
                raw_arguments=raw_arguments,
            )
        )
    usage_raw = data.get("usage") or {}
    cached = (usage_raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    usage = Usage(
        requests=1,
        input_tokens=max(0, (usage_raw.get("prompt_tokens") or 0) - cached),
        output_tokens=usage_raw.get("completion_tokens") or 0,
        cache_read_tokens=cached,
    )
    finish = choice.get("finish_reason") or "stop"
    return ModelResponse(
        message=Message("assistant", parts),
        stop_reason=_STOP.get(finish, finish),
        usage=usage,
        model=data.get("model") or name,
    )
