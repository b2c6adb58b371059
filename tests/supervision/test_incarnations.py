"""An old incarnation whose handler outlived its shutdown time (a handler cannot be killed in
Python) is fenced: nothing it does is kept, delivered or replied, and it is logged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import msgspec
import pytest

from promissory.actors import ChildDef, Context, DurableActor, Strategy, Supervisor, child, handler
from promissory.runtime import Runtime
from tests.supervision.actors import Crash, Worker, gate, sql, start, wait_until

LOG: list[tuple[str, int, str]] = []
"""(event, epoch, message) of every run of the stubborn handler."""
_lock = threading.Lock()


class Job(msgspec.Struct):
    key: str


class Note(msgspec.Struct):
    text: str


class Sink(DurableActor[list[str]]):
    @handler
    def note(self, ctx: Context, msg: Note) -> None:
        self.state = [*(self.state or []), msg.text]


EFFECTS: list[int] = []


def effect(epoch: int) -> int:
    EFFECTS.append(epoch)
    return epoch


class Stubborn(DurableActor[None]):
    """Its first run ignores everything (a blocking call) until the test opens the gate
    ``stubborn``, then carries on."""

    @handler
    def job(self, ctx: Context, msg: Job) -> str:
        assert self._activation.fence is not None
        epoch = self._activation.fence.epoch
        with _lock:
            LOG.append(("start", epoch, ctx.message_id))
            first = sum(1 for e in LOG if e[0] == "start") == 1
        if first:
            # Blocked until the new incarnation has answered, however long the bounce takes on
            # a loaded machine (the fixture opens the gate if the test ends first).
            gate("stubborn").wait(60)
        ctx.step(effect, epoch, name="work")
        ctx.send("log", Note(f"sent by {epoch}"))
        with _lock:
            LOG.append(("end", epoch, ctx.message_id))
        return f"answered by {epoch}"


class Pair(Supervisor):
    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Stubborn, id="slow", shutdown=0.2), child(Worker, id="crasher")]


def test_an_old_incarnation_past_its_shutdown_time_keeps_and_replies_nothing(
    rt: Runtime, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    LOG.clear()
    EFFECTS.clear()
    caplog.set_level(logging.INFO)
    rt.spawn(Sink, id="log")
    start(rt, Pair, id="p")
    reply = rt.ref("p/slow").ask(Job("j"))
    wait_until(lambda: LOG[:1] and LOG[0][0] == "start")
    old = LOG[0][1]
    # A sibling crashes: one_for_all bounces slow (0.2 s to finish: it does not) and restarts
    # it; the new incarnation handles the message again and answers.
    assert rt.ref("p/crasher").ask(Crash(times=1)).get(10) == "survived"
    new = int(reply.get(10).removeprefix("answered by "))
    assert new > old
    # The old handler wakes up after the new one answered: its next durable operation is
    # refused before it runs, so its step's effect never happens, and it sends nothing.
    gate("stubborn").set()
    wait_until(lambda: "was fenced off while handling" in caplog.text)
    assert "did not finish its message within its shutdown time" in caplog.text
    assert EFFECTS == [new]
    assert ("end", old, reply.id) not in LOG
    [(state,)] = sql(dsn, "SELECT state FROM actors WHERE id = 'log'")
    assert state == [f"sent by {new}"]
    assert rt.store is not None and rt.store.get(reply.id).value_as(str) == f"answered by {new}"
