"""Scenarios for supervision decisions cut off by a kill (run in child processes).

Each spawns a supervisor with fixed ids, makes a child crash, waits until the supervisor has
restarted what it decided to restart and every message is handled, and returns what a clean
run would: replies, restart counts. Killed at ``actor.revived`` or ``actor.bounced`` (after
the supervisor's revive or bounce committed, before its step was kept), a rerun must finish the
same way: no restart counted twice, no job run twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from promissory import ChildSpec, Runtime, SupervisorRef, child
from promissory.actors import ChildDef, Strategy, Supervisor
from tests.supervision.actors import Busy, Crash, Work, Worker, actor, wait_until


class OneForOne(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w")]


class RestForOne(Supervisor):
    strategy = Strategy.REST_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="a"), child(Worker, id="b")]


def _settled(rt: Runtime, ids: list[str]) -> list[Any]:
    assert rt.store is not None
    return [rt.store.wait(i, timeout=30).value_as(Any) for i in ids]


def one_for_one_restart(rt: Runtime) -> dict[str, Any]:
    sup = SupervisorRef(rt.spawn(OneForOne, id="ofo", spec=ChildSpec(restart="temporary")))
    sup.which_children()
    w = rt.ref("ofo/w")
    crash = w.tell(Crash(times=1), id="ofo/w/crash")
    job = w.tell(Work("job"), id="ofo/w/job")
    replies = _settled(rt, [crash, job])
    wait_until(lambda: (row := actor(rt, "ofo/w")) is not None and row.status == "running")
    row = actor(rt, "ofo/w")
    assert row is not None
    return {"replies": replies, "restarts": row.restarts}


def rest_for_one_restart(rt: Runtime) -> dict[str, Any]:
    sup = SupervisorRef(rt.spawn(RestForOne, id="rfo", spec=ChildSpec(restart="temporary")))
    sup.which_children()
    b = rt.ref("rfo/b")
    # b is busy when a crashes: its restart waits for that message; the job waits behind it.
    busy = b.tell(Busy("b-busy", 0.3), id="rfo/b/busy")
    job = b.tell(Work("b-job"), id="rfo/b/job")
    crash = rt.ref("rfo/a").tell(Crash(times=1), id="rfo/a/crash")
    replies = _settled(rt, [busy, job, crash])
    rows = {i: actor(rt, f"rfo/{i}") for i in ("a", "b")}
    return {"replies": replies, "restarts": {i: r.restarts for i, r in rows.items() if r}}
