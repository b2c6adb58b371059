"""Tools: plain Python functions, described to the model by their type hints and docstring.

A tool's JSON schema is msgspec's schema of a Struct built from the function's parameters;
its description is the docstring's first paragraph and each argument's description comes from
the docstring's ``Args:`` section. The model's arguments are validated against that Struct
before the function runs, so a bad call becomes an error result for the model, not a crash.

A tool whose first parameter is annotated ``Context`` is a *durable tool*: it runs as part of
the agent's handler and may use the context's durable operations (steps, promises, timers,
calls), so it can wait for a person's approval for days without holding a thread. Other tools
run as one step each, with the tool's ``RetryPolicy``; ``current_step().idempotency_key``
inside one is stable across retries and crashes.
"""

from __future__ import annotations

import enum
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from ..actors import Context, RetryPolicy
from ..errors import InvalidInputError
from ._chat import ToolSpec

__all__ = ["Effect", "Tool", "tool"]


class Effect(enum.StrEnum):
    """What running a tool again after a crash would do (the crash-test harness checks it)."""

    SAFE = "safe"
    """Reading only, or harmless to repeat."""
    IDEMPOTENT = "idempotent"
    """Harmless to repeat with the same idempotency key (``current_step().idempotency_key``)."""
    AT_MOST_ONCE = "at_most_once"
    """Must not run twice: a crash while it runs should be looked at by a person."""


class Tool:
    """A function the model may call (see the module docstring).

    Attributes:
        name: the name the model calls it by.
        description: what it does, for the model.
        parameters: the JSON schema of its arguments.
        retry: how a failing call is retried (default: not at all).
        timeout: seconds one call may take (the run's deadline, if nearer, wins).
        durable: it takes a ``Context`` and runs inside the agent's handler.
        effect: what running it twice would do.

    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        retry: RetryPolicy | None = None,
        effect: Effect | str = Effect.SAFE,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.timeout = timeout
        self.name = name or fn.__name__
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise InvalidInputError(
                f"a tool name must be 1-64 letters, digits, _ or -, not {self.name!r}"
            )
        summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description or summary or self.name
        self.retry = retry
        self.effect = Effect(effect)
        params = list(inspect.signature(fn).parameters.values())
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:
            raise InvalidInputError(
                f"cannot read the type hints of tool {self.name}: {exc}"
            ) from exc
        self.durable = bool(params) and hints.get(params[0].name) is Context
        if self.durable:
            params = params[1:]
        fields: list[Any] = []
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise InvalidInputError(f"tool {self.name} cannot take *args or **kwargs")
            annotation = hints.get(p.name, Any)
            if p.default is inspect.Parameter.empty:
                fields.append((p.name, annotation))
            else:
                fields.append((p.name, annotation, p.default))
        self.args_type: Any = msgspec.defstruct(
            f"{self.name}_arguments", fields, kw_only=True, forbid_unknown_fields=True
        )
        self.parameters = _schema(self.args_type, arg_docs)
        self.returns = hints.get("return", Any)

    def spec(self) -> ToolSpec:
        """The tool as the model is told of it."""
        return ToolSpec(self.name, self.description, self.parameters)

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments for the function, validated.

        Raises:
            InvalidInputError: the arguments do not fit the tool's parameters.

        """
        try:
            args = msgspec.convert(arguments, self.args_type)
        except msgspec.ValidationError as exc:
            raise InvalidInputError(f"invalid arguments for {self.name}: {exc}") from exc
        return {f: getattr(args, f) for f in self.args_type.__struct_fields__}

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


@typing.overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@typing.overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    retry: RetryPolicy | None = None,
    effect: Effect | str = Effect.SAFE,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    retry: RetryPolicy | None = None,
    effect: Effect | str = Effect.SAFE,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function a ``Tool``; use bare (``@tool``) or with options.

    Example:
        >>> @tool(retry=RetryPolicy(max_attempts=3), effect="idempotent")
        ... def search(query: str, limit: int = 5) -> list[str]:
        ...     '''Search the web.
        ...
        ...     Args:
        ...         query: what to look for.
        ...         limit: how many results.
        ...     '''
        ...     return []
        >>> search.parameters["properties"]["query"]["description"]
        'what to look for.'

    """

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(
            f, name=name, description=description, retry=retry, effect=effect, timeout=timeout
        )

    return make(fn) if fn is not None else make


def content_of(value: Any) -> str:
    """A tool's result as the text the model is shown: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def _schema(args_type: Any, docs: dict[str, str]) -> dict[str, Any]:
    schema = msgspec.json.schema(args_type)
    defs = schema.get("$defs", {})
    ref = schema.get("$ref", "")
    top = dict(defs.pop(ref.rsplit("/", 1)[-1], schema)) if ref else dict(schema)
    top.pop("title", None)
    properties = {k: dict(v) for k, v in top.get("properties", {}).items()}
    for key, text in docs.items():
        if key in properties:
            properties[key]["description"] = text
    top["properties"] = properties
    top.setdefault("required", [])
    if defs:
        top["$defs"] = defs
    return top


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Example|Examples|Yields):\s*$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each argument's text from a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()):
            break
        summary_lines.append(line.strip())
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        stripped = line.strip()
        match = _SECTION.match(stripped)
        if match:
            in_args = match.group(1) in ("Args", "Arguments", "Parameters")
            current = None
            continue
        if not in_args or not stripped:
            continue
        entry = re.match(r"^(\w+)\s*(\([^)]*\))?:\s*(.*)$", stripped)
        if entry and line.startswith(" " * 4) and not line.startswith(" " * 8):
            current = entry.group(1)
            args[current] = entry.group(3).strip()
        elif current is not None:
            args[current] = (args[current] + " " + stripped).strip()
    return " ".join(summary_lines), args
