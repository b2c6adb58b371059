"""Spans as plain data, a span exporter that appends to a file (it survives SIGKILL line by
line), and the agents the tracing tests run: a lead with a tool and a sub-agent with a tool."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from promissory.agents import Agent, ScriptedModel, Usage, call, reply, tool

RUN = "agent/run/traced"


@tool
def search(query: str) -> list[str]:
    """Search.

    Args:
        query: what to look for.
    """
    return [f"a result about {query}"]


def usage(i: int, o: int) -> Usage:
    return Usage(requests=1, input_tokens=i, output_tokens=o)


researcher = Agent(
    "t-researcher",
    "Find facts.",
    ScriptedModel(
        [reply("", call("search", "s1", query="X"), usage=usage(20, 4)), reply("X is old.")],
        name="openai:gpt-4o-mini",
    ),
    tools=[search],
)
lead = Agent(
    "t-lead",
    "Plan, delegate, write.",
    ScriptedModel(
        [
            reply(
                "",
                call("t-researcher", "r1", input="Research X"),
                call("search", "s2", query="Y"),
                usage=usage(100, 10),
            ),
            reply("X is old; Y is new.", usage=usage(150, 8)),
        ],
        name="openai:gpt-4o",
    ),
    tools=[researcher, search],
)


@dataclass
class SpanData:
    name: str
    trace: str
    span: str
    parent: str | None
    attributes: dict[str, Any]
    start: int
    end: int
    children: list[SpanData] = field(default_factory=list)

    @classmethod
    def of(cls, s: ReadableSpan) -> SpanData:
        ctx = s.context
        assert ctx is not None
        return cls(
            name=s.name,
            trace=f"{ctx.trace_id:032x}",
            span=f"{ctx.span_id:016x}",
            parent=f"{s.parent.span_id:016x}" if s.parent is not None else None,
            attributes=dict(s.attributes or {}),
            start=s.start_time or 0,
            end=s.end_time or 0,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trace": self.trace,
            "span": self.span,
            "parent": self.parent,
            "attributes": {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()
            },
            "start": self.start,
            "end": self.end,
        }

    def shape(self) -> Any:
        """The span's name and its children's shapes, sorted by name (work that runs at once
        starts in any order)."""
        kids = sorted((k.shape() for k in self.children), key=str)
        return (self.name, kids) if kids else self.name


def normal(shape: Any) -> Any:
    """A shape written by hand, its children sorted as ``SpanData.shape`` sorts them."""
    if isinstance(shape, tuple):
        return (shape[0], sorted((normal(k) for k in shape[1]), key=str))
    return shape


def tree(spans: Sequence[SpanData]) -> list[SpanData]:
    """Link spans to their parents; return the roots (spans whose parent is not among them)."""
    by_id = {s.span: s for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: s.start):
        s.children = []
    for s in sorted(spans, key=lambda s: s.start):
        parent = by_id.get(s.parent) if s.parent else None
        if parent is not None:
            parent.children.append(s)
        else:
            roots.append(s)
    return roots


class FileExporter(SpanExporter):
    """Appends each finished span to a file, one JSON line per span, as it ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(SpanData.of(s).as_json()) + "\n" for s in spans).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def read_spans(path: str | Path) -> list[SpanData]:
    out = []
    for line in Path(path).read_text().splitlines():
        d = json.loads(line)
        out.append(SpanData(**d))
    return out
