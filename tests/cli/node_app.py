"""What ``promissory run tests.cli.node_app:setup`` hosts: a greeter actor.

``Greet`` is answered at once. ``Hold`` runs a step that writes its process id to a file and
then waits until another file exists, so a test can stop or kill the node while a handler is
in flight and let it go on when it chooses.
"""

from __future__ import annotations

import os
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


def wait_for_release(started: str, release: str) -> str:
    Path(started).write_text(str(os.getpid()))
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
