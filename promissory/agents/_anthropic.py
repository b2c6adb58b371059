"""``AnthropicModel``: the Anthropic Messages wire format.

Tool calls are ``tool_use`` blocks with an object of arguments; all results of one turn go
back in one user message, tool results first. ``max_tokens`` is required by the API (default
4096 here). Cache reads and writes are counted apart from input tokens, as Anthropic reports.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ModelError
from ._chat import Message, ModelRequest, ModelResponse, Part, TextPart, ToolCall, Usage
from ._http import post_json, post_sse

_STOP = {"end_turn": "end_turn", "tool_use": "tool_calls", "max_tokens": "max_tokens"}


class AnthropicModel:
    """A Claude model behind the Messages API.

    Args:
        model: the model's name, e.g. ``"claude-sonnet-4-5"``.
        base_url: the API root (default ``$ANTHROPIC_BASE_URL`` or Anthropic's).
        api_key: the key (default ``$ANTHROPIC_API_KEY``).
        max_tokens: the answer's token limit when the request sets none.

    """

    early_start = True
    """A new run's first turn is asked while the run is kept (``promissory.agents._early``)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 4096,
        timeout: float = 120.0,
    ) -> None:
        self.model = model
        self.base_url = (
            base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
        ).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.name = f"anthropic:{model}"

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model!r} at {self.base_url})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one Messages request."""
        if not self.api_key:
            raise ModelError(
                f"{self.name}: no API key (set ANTHROPIC_API_KEY)", "auth", retryable=False
            )
        headers = {"x-api-key": self.api_key, "anthropic-version": "2023-06-01"}
        body = to_wire(self.model, request, self.max_tokens)
        data = await post_json(
            self.base_url, "/v1/messages", body, headers, self.timeout, self.name
        )
        return from_wire(data, self.name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Send one Messages request with ``stream: true``: yield the answer's text as it
        arrives, then the whole answer (tool calls and usage included).
        """
        if not self.api_key:
            raise ModelError(
                f"{self.name}: no API key (set ANTHROPIC_API_KEY)", "auth", retryable=False
            )
        headers = {"x-api-key": self.api_key, "anthropic-version": "2023-06-01"}
        body = to_wire(self.model, request, self.max_tokens)
        body["stream"] = True
        answer = StreamedMessage()
        async for name, event in post_sse(
            self.base_url, "/v1/messages", body, headers, self.timeout, self.name
        ):
            if name == "json":  # the server answered whole, without streaming
                whole = from_wire(event, self.name)
                if whole.message.text:
                    yield whole.message.text
                yield whole
                return
            text = answer.add(name, event)
            if text:
                yield text
        yield from_wire(answer.whole(), self.name)


class StreamedMessage:
    """Messages stream events put back together into one answer, as ``from_wire`` reads it:
    ``message_start`` (model, input usage), ``content_block_start``/``_delta`` (text, or a
    tool's input as pieces of JSON), ``message_delta`` (stop reason, output usage).
    """

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"content": [], "usage": {}}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.inputs: dict[int, list[str]] = {}

    def add(self, name: str, event: Any) -> str:
        """Take one event; return the text it adds."""
        if not isinstance(event, dict):
            return ""
        kind = event.get("type") or name
        if kind == "message_start":
            start = event.get("message") or {}
            self.message["model"] = start.get("model")
            self.message["usage"].update(start.get("usage") or {})
        elif kind == "content_block_start":
            self.blocks[event.get("index", 0)] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            index = event.get("index", 0)
            delta = event.get("delta") or {}
            block = self.blocks.setdefault(index, {"type": "text", "text": ""})
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
                return str(delta.get("text", ""))
            if delta.get("type") == "input_json_delta":
                self.inputs.setdefault(index, []).append(delta.get("partial_json", ""))
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                self.message["stop_reason"] = delta["stop_reason"]
            self.message["usage"].update(event.get("usage") or {})
        elif kind == "error":
            error = event.get("error") or {}
            raise ModelError(
                f"anthropic: the stream ended with an error: {error.get('message', error)}",
                "server",
                True,
            )
        return ""

    def whole(self) -> dict[str, Any]:
        """The answer as a non-streamed Messages body."""
        content = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if block.get("type") == "tool_use":
                pieces = "".join(self.inputs.get(index, ()))
                try:
                    block["input"] = json.loads(pieces) if pieces else block.get("input", {})
                except ValueError:
                    block["input"] = {}
            content.append(block)
        return {**self.message, "content": content}


def to_wire(model: str, request: ModelRequest, max_tokens: int) -> dict[str, Any]:
    """The Messages request body for ``request``."""
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "tool":
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": r.call_id,
                    "content": r.content,
                    "is_error": r.is_error,
                }
                for r in message.tool_results
            ]
            _append(messages, "user", blocks)
        elif message.role == "assistant":
            blocks = []
            if message.text:
                blocks.append({"type": "text", "text": message.text})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.tool_calls
            )
            _append(messages, "assistant", blocks)
        else:
            _append(messages, "user", [{"type": "text", "text": message.text}])
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.settings.max_tokens or max_tokens,
        "messages": messages,
    }
    if request.system:
        body["system"] = request.system
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        if request.settings.parallel_tool_calls is False:
            body["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    if request.settings.temperature is not None:
        body["temperature"] = request.settings.temperature
    return body


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # The API wants roles to alternate: consecutive user blocks (tool results, then text) merge,
    # with tool results first.
    if messages and messages[-1]["role"] == role:
        merged = messages[-1]["content"] + blocks
        merged.sort(key=lambda b: 0 if b.get("type") == "tool_result" else 1)
        messages[-1]["content"] = merged
    else:
        messages.append({"role": role, "content": blocks})


def from_wire(data: Any, name: str) -> ModelResponse:
    """A ``ModelResponse`` from a Messages answer."""
    if not isinstance(data, dict) or "content" not in data:
        raise ModelError(f"{name}: no content in the answer: {str(data)[:200]}", "malformed_output")
    parts: list[Part] = []
    for block in data["content"]:
        if block.get("type") == "text":
            parts.append(TextPart(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = block.get("input")
            parts.append(
                ToolCall(
                    id=block.get("id", ""),
                    name=block.get("name", ""),
                    arguments=arguments if isinstance(arguments, dict) else {},
                )
            )
    raw = data.get("usage") or {}
    usage = Usage(
        requests=1,
        input_tokens=raw.get("input_tokens") or 0,
        output_tokens=raw.get("output_tokens") or 0,
        cache_read_tokens=raw.get("cache_read_input_tokens") or 0,
        cache_write_tokens=raw.get("cache_creation_input_tokens") or 0,
    )
    stop = data.get("stop_reason") or "end_turn"
    return ModelResponse(
        message=Message("assistant", parts),
        stop_reason=_STOP.get(stop, stop),
        usage=usage,
        model=data.get("model") or name,
    )
