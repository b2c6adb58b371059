"""``AnthropicModel``: the Anthropic Messages wire format.

Tool calls are ``tool_use`` blocks with an object of arguments; all results of one turn go
back in one user message, tool results first. ``max_tokens`` is required by the API (default
4096 here). Cache reads and writes are counted apart from input tokens, as Anthropic reports.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelError
from ._http import post_json
from ._messages import Message, ModelRequest, ModelResponse, Part, TextPart, ToolCall, Usage

_STOP = {"end_turn": "end_turn", "tool_use": "tool_calls", "max_tokens": "max_tokens"}


class AnthropicModel:
    """A Claude model behind the Messages API.

    Args:
        model: the model's name, e.g. ``"claude-sonnet-4-5"``.
        base_url: the API root (default ``$ANTHROPIC_BASE_URL`` or Anthropic's).
        api_key: the key (default ``$ANTHROPIC_API_KEY``).
        max_tokens: the answer's token limit when the request sets none.

    """

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
