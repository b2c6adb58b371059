"""The provider-neutral conversation: messages, tool calls and results, usage, requests.

Every adapter translates to and from these Structs, and the agent loop keeps them as the
values of its steps (a model step keeps the ``ModelResponse``, a tool step its result), so a
transcript reads the same in SQL whatever the provider.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Message",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "TextPart",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
]


class TextPart(msgspec.Struct, frozen=True, tag="text"):
    """Plain text."""

    text: str


class ToolCall(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call"):
    """The model asks for a tool to be called.

    Attributes:
        id: the call's id (the provider's, or one made up when it gave none).
        name: the tool's name.
        arguments: the arguments as a JSON object.
        raw_arguments: the arguments as the model wrote them, when they did not parse.

    """

    id: str
    name: str
    arguments: dict[str, Any] = {}
    raw_arguments: str | None = None


class ToolResult(msgspec.Struct, frozen=True, kw_only=True, tag="tool_result"):
    """The result of one tool call, as the model is shown it."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


Part = TextPart | ToolCall | ToolResult

Role = Literal["system", "user", "assistant", "tool"]


class Message(msgspec.Struct, frozen=True):
    """One message of a conversation: a role and its parts."""

    role: Role
    parts: list[Part]

    @classmethod
    def user(cls, text: str) -> Message:
        """A user message of plain text."""
        return cls("user", [TextPart(text)])

    @classmethod
    def assistant(cls, text: str = "", calls: list[ToolCall] | None = None) -> Message:
        """An assistant message: text, tool calls, or both."""
        parts: list[Part] = [TextPart(text)] if text else []
        parts.extend(calls or ())
        return cls("assistant", parts)

    @property
    def text(self) -> str:
        """The text parts joined."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls, in the model's order."""
        return [p for p in self.parts if isinstance(p, ToolCall)]

    @property
    def tool_results(self) -> list[ToolResult]:
        """The tool results, in order."""
        return [p for p in self.parts if isinstance(p, ToolResult)]


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Tokens (and cost, where prices are known) of one or more model calls.

    ``input_tokens`` excludes cache reads and writes, which are counted apart (the OpenAI
    adapter subtracts cached tokens, Anthropic reports them apart already).
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        """Every token, in and out."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        cost = None
        if self.cost is not None or other.cost is not None:
            cost = (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cost=cost,
        )


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool as the model is told of it: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelSettings(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-request settings an adapter passes on where the provider supports them."""

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    timeout: float | None = None
    parallel_tool_calls: bool | None = None


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a model is asked in one call."""

    system: str
    messages: list[Message]
    tools: list[ToolSpec] = []
    output_schema: dict[str, Any] | None = None
    settings: ModelSettings = ModelSettings()


class ModelResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A model's answer: one assistant message, why it stopped, and what it cost."""

    message: Message
    stop_reason: str = "end_turn"
    usage: Usage = Usage()
    model: str = ""
