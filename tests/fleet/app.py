"""What the fleet tests' nodes host: three actor types, a supervision tree, agents; and the side
log every handler writes (actor, epoch, message, node, when it began and ended), so a test can
tell who ran what, where, and whether two nodes ever ran one actor at once.

Each node process imports this module (so it can host every type here) and is told which
types to host (``Runtime(hosts=...)``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from promissory import Context, DurableActor, handler
from promissory.actors import ChildDef, Strategy, Supervisor, child, current_step
from promissory.agents import Agent, FunctionModel, call, reply, tool
from promissory.testing import effect

LOG_ENV = "FLEET_LOG"
"""The side log's path (one line per handler invocation, appended atomically)."""
NODE_ENV = "FLEET_NODE"
"""A name for the node process (the runtime's node id changes when it rejoins)."""


class Job(msgspec.Struct):
    n: int
    work: float = 0.0
    """Seconds the handler spends (between its two steps)."""


class Tally(msgspec.Struct):
    total: int = 0
    count: int = 0


def _note(actor: DurableActor[Any], ctx: Context, event: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    activation = actor._activation
    epoch = activation.fence.epoch if activation.fence is not None else -1
    node = activation.host.node_id
    line = f"{event}\t{ctx.actor_id}\t{epoch}\t{ctx.message_id}\t{node}\t{time.time():.6f}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def counted(n: int) -> int:
    """A step's effect, counted across processes by its idempotency key."""
    step = current_step()
    assert step is not None
    effect("counted", step.idempotency_key)
    return n


class _Counting(DurableActor[Tally]):
    @handler
    def job(self, ctx: Context, msg: Job) -> int:
        _note(self, ctx, "begin")
        ctx.step(counted, msg.n, name="first")
        if msg.work:
            time.sleep(msg.work)
        ctx.step(counted, msg.n, name="second")
        self.state = Tally(self.state.total + msg.n, self.state.count + 1)
        _note(self, ctx, "end")
        return self.state.total


class X(_Counting, name="fleet.X"):
    pass


class Y(_Counting, name="fleet.Y"):
    pass


class Z(_Counting, name="fleet.Z"):
    pass


class Crew(Supervisor, name="fleet.Crew"):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 100, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(X, id="a"), child(Y, id="b")]


@tool
def double(n: int) -> int:
    """Double a number.

    Args:
        n: the number.
    """
    step = current_step()
    assert step is not None
    effect("double", step.idempotency_key)
    return 2 * n


def _helper_model(request: Any) -> Any:
    return f"helped: {request.messages[0].text}"


def _lead_model(request: Any) -> Any:
    turns = sum(1 for m in request.messages if m.role == "assistant")
    if turns == 0:
        return reply("", call("double", "d1", n=21))
    if turns == 1:
        return reply("", call("fleet-helper", "h1", input="the plan"))
    return "done"


helper = Agent("fleet-helper", "Help.", FunctionModel(_helper_model))
lead = Agent(
    "fleet-lead",
    "Double, delegate, answer.",
    FunctionModel(_lead_model),
    tools=[double, helper.as_tool()],
)

TYPES = {"X": X, "Y": Y, "Z": Z, "Crew": Crew, "lead": lead, "helper": helper}
"""What a node may be told to host, by the names the tests use."""


class Nap(msgspec.Struct):
    seconds: float


class Napper(DurableActor[None], name="fleet.Napper"):
    """Sleeps on a durable timer, then answers."""

    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        _note(self, ctx, "begin")
        ctx.sleep(msg.seconds)
        _note(self, ctx, "end")
        return f"woke on {self._activation.host.node_id}"


class Crash(msgspec.Struct):
    pass


class CrashOnce(DurableActor[None], name="fleet.CrashOnce"):
    """Its first incarnation crashes on its first message; the restart (after a backoff)
    answers."""

    @handler
    def crash(self, ctx: Context, msg: Crash) -> str:
        record = self._activation.record
        if record is not None and record.restarts == 0:
            raise RuntimeError("once")
        return f"restarted on {self._activation.host.node_id}"


TYPES.update({"Napper": Napper, "CrashOnce": CrashOnce})
