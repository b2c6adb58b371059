"""What ``promissory run tests.cli.node_app:setup`` hosts: a greeter actor.

``Greet`` is answered at once. ``Hold`` runs a step that writes its process id to a file (in
one piece: a reader never sees it half written), says ``holding in PID`` on stdout (what a test
waits for), and then waits until another file exists, so a test can stop or kill the node while
a handler is in flight and let it go on when it chooses.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import msgspec

from promissory import Context, DurableActor, Runtime, handler

GREETER = "cli/greeter"


class Greeted(msgspec.Struct):
    count: int = 0


class Greet(msgspec.Struct):
    name: str


class Hold(msgspec.Struct):
    started: str
    release: str


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the whole text or no file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def wait_for_release(started: str, release: str) -> str:
    write_atomically(Path(started), str(os.getpid()))
    # One write, newline included: print() writes the text and the newline apart, and the
    # node's own "serving" line (another thread) may come between them.
    sys.stdout.write(f"holding in {os.getpid()}\n")
    sys.stdout.flush()
    deadline = time.monotonic() + 60
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.01)
    return f"released in {os.getpid()}"


class Greeter(DurableActor[Greeted]):
    @handler
    def greet(self, ctx: Context, msg: Greet) -> str:
        self.state = Greeted(self.state.count + 1)
        return f"hello, {msg.name} (#{self.state.count}, node pid {os.getpid()})"

    @handler
    def hold(self, ctx: Context, msg: Hold) -> str:
        answer: str = ctx.step(wait_for_release, msg.started, msg.release)
        return answer


def setup(rt: Runtime) -> None:
    rt.spawn(Greeter, id=GREETER)


NOT_AN_ACTOR = "a string"
