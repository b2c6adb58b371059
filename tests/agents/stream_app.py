"""A streaming agent in child processes, for the stream crash tests.

``python -m tests.agents.stream_app produce DSN RUN [--start]`` hosts the agent (and with
``--start`` starts the run), prints ``READY``, and exits once the run has ended.
``python -m tests.agents.stream_app consume DSN RUN`` prints the run's stream, one JSON event a
line, and exits after its end. The tool writes a line to ``$STREAM_MARKS`` when it starts; the
model writes one before each piece of its last answer, so a test knows where to kill.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from promissory import Runtime, Store
from promissory.agents import Agent, FunctionModel, ModelRequest, RunHandle, call, reply, tool

PIECES = ["The ", "answer ", "is ", "forty", "-two."]


def mark(text: str) -> None:
    if "STREAM_MARKS" not in os.environ:
        return
    with open(os.environ["STREAM_MARKS"], "a") as marks:
        marks.write(text + "\n")


@tool
def lookup(key: str) -> str:
    """Look a key up (slowly)."""
    mark(f"tool {key}")
    time.sleep(float(os.environ.get("STREAM_TOOL_SECONDS", "0")))
    return f"{key}=42"


def answer(request: ModelRequest) -> Any:
    if not any(m.role == "assistant" for m in request.messages):
        return reply("", call("lookup", "c1", key="x"))
    return pieces()


async def pieces() -> AsyncIterator[str]:
    for piece in PIECES:
        mark(f"piece {piece}")
        yield piece
        await asyncio.sleep(float(os.environ.get("STREAM_PIECE_SECONDS", "0")))


agent = Agent(
    "stream-crashy", "Answer.", model=FunctionModel(answer, name="pieces"), tools=[lookup]
)


def main(argv: list[str]) -> int:
    mode, dsn, run = argv[:3]
    if mode == "produce":
        with Runtime(dsn) as rt:
            handle = rt.start(agent, "what is x?", id=run) if "--start" in argv else None
            print("READY", flush=True)
            assert rt.store is not None
            (handle or RunHandle(run, rt.store)).result(timeout=60)
        return 0
    with Store(dsn) as store:
        print("READY", flush=True)
        for event in RunHandle(run, store).stream():
            sys.stdout.write(msgspec.json.encode(event).decode() + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
