"""Every way a supervisor ends a child ends the child's whole subtree, children first (OTP's
shutdown of a supervisor child): ``terminate_child``, a removal by its restart rules, and
auto-shutdown of a nested significant child."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from promissory.actors import ChildDef, Strategy, Supervisor, child
from promissory.errors import ActorNotFoundError, ActorStoppedError
from promissory.runtime import Runtime
from tests.supervision.actors import (
    EVENTS,
    Crash,
    Ping,
    SignificantOuter,
    Stop,
    Worker,
    start,
    status,
    wait_until,
)


class Lower(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w1"), child(Worker, id="w2")]


class Top(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Lower, id="l", restart="transient"), child(Worker, id="x")]


def test_terminating_a_child_supervisor_stops_its_workers_first(rt: Runtime) -> None:
    top = start(rt, Top, id="t")
    for w in ("t/l/w1", "t/l/w2"):
        wait_until(lambda w=w: status(rt, w) == "running")
        rt.ref(w).ask(Ping()).get(5)
    EVENTS.clear()
    assert top.terminate_child("l").ok
    assert [status(rt, a) for a in ("t/l", "t/l/w1", "t/l/w2", "t/x")] == [
        "stopped",
        "stopped",
        "stopped",
        "running",
    ]
    # Children first, the newest first, then the supervisor (OTP's reverse start order).
    assert EVENTS.of("stop")[:2] == ["t/l/w2", "t/l/w1"]
    with pytest.raises(ActorStoppedError):
        rt.ref("t/l/w1").ask(Ping()).get(5)
    # Restarted by restart_child, it starts its workers again.
    assert top.restart_child("l").ok
    wait_until(lambda: status(rt, "t/l/w1") == "running")
    assert rt.ref("t/l/w1").ask(Ping()).get(5)["id"] == "t/l/w1"


class AllTop(Supervisor):
    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Lower, id="l", restart="temporary"), child(Worker, id="x")]


def test_a_child_supervisor_removed_by_the_restart_rules_ends_its_workers(rt: Runtime) -> None:
    start(rt, AllTop, id="t")
    for w in ("t/l/w1", "t/l/w2"):
        wait_until(lambda w=w: status(rt, w) == "running")
        rt.ref(w).ask(Ping()).get(5)
    EVENTS.clear()
    # x crashes once: one_for_all restarts x (which then handles the message) and removes its
    # temporary sibling l, for good. Once only: a message that crashed every incarnation
    # would exceed t's intensity and end t too, racing the check that t runs.
    assert rt.ref("t/x").ask(Crash(times=1)).get(10) == "survived"
    wait_until(lambda: status(rt, "t/l") is None)
    wait_until(lambda: {"t/l/w1", "t/l/w2"} <= set(EVENTS.of("stop")))
    assert status(rt, "t") == "running"
    for w in ("t/l/w1", "t/l/w2"):
        with pytest.raises((ActorStoppedError, ActorNotFoundError)):
            rt.ref(w).ask(Ping()).get(5)


def test_auto_shutdown_of_a_nested_significant_supervisor_ends_its_workers(rt: Runtime) -> None:
    start(rt, SignificantOuter, id="o")
    wait_until(lambda: status(rt, "o/inner/task") == "running")
    rt.ref("o/inner/task").ask(Ping()).get(5)
    rt.ref("o/other").ask(Ping()).get(5)
    # The inner task ends normally: inner shuts down (auto), then outer does.
    rt.ref("o/inner/task").ask(Stop("normal")).get(5)
    wait_until(lambda: status(rt, "o") == "stopped")
    assert [status(rt, a) for a in ("o/inner", "o/inner/task", "o/other")] == [
        "stopped",
        "stopped",
        "stopped",
    ]
