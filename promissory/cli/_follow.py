"""``promissory show ID --follow``: a run as it happens, from its first kept event (its stream,
``RunHandle.stream``): text as the model writes it, tool calls, sub-agents, the end.

Everything printed is escaped as ``show`` escapes it; with ``--json`` each event is one line.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

import msgspec

from ..agents import (
    ModelAnswered,
    RunEnded,
    RunHandle,
    RunStarted,
    StreamEvent,
    TextDelta,
    TextDiscarded,
    ToolFinished,
    ToolStarted,
)
from ..store import Store
from ._table import printable

__all__ = ["follow"]


def follow(store: Store, run_id: str, *, as_json: bool, out: TextIO = sys.stdout) -> RunEnded:
    """Print run ``run_id``'s events until it ends; return its end."""
    writing = False  # in the middle of a model's streamed text
    streamed: set[str] = set()  # model steps whose text was printed as it came
    joined_late: set[str] = set()  # model steps whose text began before this stream joined
    for event in RunHandle(run_id, store).stream():
        if as_json:
            out.write(msgspec.json.encode(event).decode() + "\n")
        else:
            if writing and not isinstance(event, TextDelta):
                out.write("\n")
                writing = False
            line = _line(event, run_id)
            if isinstance(event, TextDelta):
                if event.step not in streamed and event.offset > 0:
                    joined_late.add(event.step)  # printed whole when it is kept, below
                if event.step in joined_late:
                    continue
                writing = True
                streamed.add(event.step)
            elif isinstance(event, ModelAnswered) and event.text and event.step not in streamed:
                # Written before this stream joined: the whole answer, as it was kept.
                line = printable(event.text, newlines=True) + "\n"
            if line is not None:
                out.write(line)
        out.flush()
        if isinstance(event, RunEnded) and event.run == run_id:
            return event
    raise RuntimeError("the stream ended before the run")  # a stream ends with its run


def _line(event: StreamEvent, root: str) -> str | None:
    where = "" if event.run == root else f"[{event.run}] "
    if isinstance(event, TextDelta):
        return printable(event.text, newlines=True)
    if isinstance(event, TextDiscarded):
        return f"{where}(the text above was discarded: its call was cut off and is made again)\n"
    if isinstance(event, RunStarted):
        return f"{where}run {event.run} ({event.agent}): {printable(_short(event.input))}\n"
    if isinstance(event, ModelAnswered):
        return None  # its text was streamed, or it only calls tools (listed next)
    if isinstance(event, ToolStarted):
        return f"{where}→ {printable(event.name)}({printable(_short(event.arguments))})\n"
    if isinstance(event, ToolFinished):
        mark = "←" if event.ok else "✗"
        return f"{where}{mark} {printable(event.name)}: {printable(_short(event.content))}\n"
    value = event.output if event.state == "resolved" else event.error
    return f"{where}{event.state}: {printable(_short(value), newlines=True)}\n"


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
