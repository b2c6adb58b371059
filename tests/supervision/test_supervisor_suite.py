"""OTP's supervisor_SUITE, ported: the same scenarios against real supervisors on Postgres.

Each test is named after the OTP case it ports (reference/supervision.md §1.11 and §8). A
child crashes when its handler raises and exits normally with ``ctx.stop()``; ``SupervisorRef``
gives OTP's child-administration API. Restart decisions are asynchronous (the supervisor
handles ``ChildExit`` in its mailbox), so tests wait on what they can observe: the reply of the
message that crashed (answered by the next incarnation), an ask queued behind it, or the
actors table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from promissory import (
    Backoff,
    ChildDef,
    ChildResult,
    ChildSpec,
    Counts,
    Runtime,
    SupervisorRef,
    child,
)
from promissory.errors import ActorStoppedError, InvalidInputError
from tests.supervision.actors import (
    EVENTS,
    FAILING,
    TALLY,
    AllBystander,
    AllSignificant,
    AnySignificant,
    BadPool,
    Boom,
    Busy,
    BystanderSup,
    Crash,
    Empty,
    FailingStart,
    FailsOnRestart,
    HangingLoop,
    Log,
    OneChild,
    OneForAll,
    OneForAllEscalation,
    OneForOne,
    OneForOneEscalation,
    Ordered,
    Ping,
    Poison,
    Pool,
    RestartFailingPool,
    RestBystander,
    RestForOne,
    RestForOneEscalation,
    ShutdownSup,
    SignificantOuter,
    SignificantPool,
    Stop,
    SupervisorPool,
    Tree,
    Windowed,
    Work,
    Worker,
    actor,
    actors,
    start,
    status,
    steps_of,
    wait_until,
)

OK = ChildResult(ok=True)


def ok(actor_id: str) -> ChildResult:
    return ChildResult(ok=True, actor=actor_id)


def err(error: str, actor_id: str | None = None) -> ChildResult:
    return ChildResult(ok=False, error=error, actor=actor_id)


def restarted(rt: Runtime, actor_id: str, times: int = 1, timeout: float = 15.0) -> None:
    """Wait until ``actor_id`` has been restarted ``times`` times and is running again."""

    def check() -> bool:
        row = actor(rt, actor_id)
        return row is not None and row.restarts >= times and row.status == "running"

    wait_until(check, timeout=timeout, what=f"{actor_id} restarted {times} time(s)")


def ended(rt: Runtime, actor_id: str) -> str | None:
    """Wait until ``actor_id`` is no longer alive; return its status (``None``: row deleted)."""
    wait_until(
        lambda: status(rt, actor_id) not in ("running", "restarting"),
        what=f"{actor_id} ended",
    )
    return status(rt, actor_id)


def escalated(rt: Runtime, sup_id: str = "sup") -> None:
    """The top-level (temporary) supervisor ended by escalating."""
    assert ended(rt, sup_id) == "failed"
    row = actor(rt, sup_id)
    assert row is not None
    assert row.reason["exit"] == "escalated"
    assert row.reason["error"]["type"].endswith("EscalationError")


def epochs(rt: Runtime, *ids: str) -> dict[str, int]:
    return {r.id: r.epoch for r in actors(rt, *ids)}


def counts(specs: int, active: int, supervisors: int, workers: int) -> Counts:
    return Counts(specs=specs, active=active, supervisors=supervisors, workers=workers)


class LongLoop(HangingLoop):
    """HangingLoop with a 10 s backoff: the child stays ``restarting`` (no start attempt
    flips it to running, nothing escalates) while a test looks at it on a loaded machine.
    HangingLoop's short backoff stays for the tests that need the loop to escalate."""

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="ok"),
            child(FailingStart, id="bad", backoff=Backoff(min=10.0, max=10.0, jitter=0.0)),
        ]


class WideWindow(Windowed):
    """Windowed with a 1.5 s period instead of 0.3 s: two crashes in a row fall well within
    it however slow the restart between them on a loaded machine, and crashes can still be
    spaced beyond it in a few seconds."""

    intensity, period = 1, 1.5


# -- sup_start ---------------------------------------------------------------------------------


def test_sup_start_normal(rt: Runtime) -> None:
    """A supervisor starts its static children in order, each a row under it, all alive."""
    sup = start(rt, OneForOne)
    children = sup.which_children()
    assert [c.id for c in children] == ["c1", "c2", "c3"]
    assert [c.actor for c in children] == ["sup/c1", "sup/c2", "sup/c3"]
    assert {c.status for c in children} == {"running"}
    rows = actors(rt, prefix="sup/")
    assert [r.id for r in rows] == ["sup/c1", "sup/c2", "sup/c3"]  # seq order = start order
    assert {r.parent for r in rows} == {"sup"}
    assert sup.count_children() == counts(3, 3, 0, 3)
    for c in children:
        assert rt.ref(c.actor).ask(Ping()).get(5)["id"] == c.actor


# -- child administration ----------------------------------------------------------------------


def test_child_adm(rt: Runtime) -> None:
    """start/terminate/restart/delete_child, which_children and count_children, with OTP's
    results: already_started, not_found, running; terminate twice is ok."""
    sup = start(rt, OneChild)
    spec = child(Worker, id="c1")
    assert [(c.id, c.status) for c in sup.which_children()] == [("c1", "running")]
    assert sup.count_children() == counts(1, 1, 0, 1)

    # start of an already running child
    assert sup.start_child(spec) == err("already_started", "sup/c1")

    # termination
    assert sup.terminate_child("hej") == err("not_found")
    assert sup.terminate_child("c1") == ok("sup/c1")
    assert [(c.id, c.status) for c in sup.which_children()] == [("c1", "stopped")]
    assert sup.count_children().specs == 1
    assert sup.count_children().active == 0
    assert sup.terminate_child("c1") == ok("sup/c1")  # like OTP: terminating twice is ok

    # restart
    assert sup.restart_child("c1") == ok("sup/c1")
    assert status(rt, "sup/c1") == "running"
    assert sup.restart_child("c1") == err("running", "sup/c1")
    assert sup.restart_child("hej") == err("not_found")
    assert rt.ref("sup/c1").ask(Ping()).get(5)["id"] == "sup/c1"

    # deletion
    assert sup.delete_child("c1") == err("running")
    assert sup.delete_child("hej") == err("not_found")
    assert sup.terminate_child("c1") == ok("sup/c1")
    assert sup.delete_child("c1") == OK
    assert sup.delete_child("c1") == err("not_found")
    assert sup.restart_child("c1") == err("not_found")
    assert sup.which_children() == []
    assert sup.count_children() == counts(0, 0, 0, 0)
    assert actor(rt, "sup/c1") is None

    # start again
    assert sup.start_child(spec) == ok("sup/c1")
    assert [(c.id, c.status) for c in sup.which_children()] == [("c1", "running")]
    assert sup.count_children() == counts(1, 1, 0, 1)

    # and it is restarted automatically after a crash
    before = epochs(rt, "sup/c1")["sup/c1"]
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
    assert epochs(rt, "sup/c1")["sup/c1"] > before
    assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [("c1", "running", 1)]


def test_child_adm_simple(rt: Runtime) -> None:
    """A simple_one_for_one pool starts with no children; members are added, listed, counted
    and terminated by id (terminating twice is ok; an unknown one is not_found)."""
    sup = start(rt, Pool)
    assert sup.which_children() == []
    assert sup.count_children().active == 0
    # A member is started by id, from the pool's one child spec (or from a spec of that kind).
    assert sup.start_child("w1") == ok("sup/w1")
    assert [(c.id, c.status) for c in sup.which_children()] == [("w1", "running")]
    assert sup.count_children() == counts(1, 1, 0, 1)
    assert sup.start_child(child(Worker, id="w2")) == ok("sup/w2")
    assert [c.id for c in sup.which_children()] == ["w1", "w2"]
    assert sup.count_children() == counts(2, 2, 0, 2)

    assert sup.terminate_child("w1") == ok("sup/w1")
    assert status(rt, "sup/w1") == "stopped"
    assert sup.count_children().active == 1
    assert sup.terminate_child("w1") == ok("sup/w1")
    assert sup.count_children().active == 1
    assert sup.terminate_child("nochild") == err("not_found")
    assert rt.ref("sup/w2").ask(Ping()).get(5)["id"] == "sup/w2"


def test_which_children(rt: Runtime) -> None:
    """which_children lists static then dynamic children in start order, with their status,
    whether they are supervisors, their restart type and how often they were restarted."""
    sup = start(rt, OneForOne)
    assert sup.start_child(child(Worker, id="dyn", restart="transient")) == ok("sup/dyn")
    assert sup.start_child(child(Empty, id="sub", shutdown=None)) == ok("sup/sub")
    assert rt.ref("sup/c2").ask(Crash()).get(5) == "survived"
    listed = [
        (c.id, c.actor, c.status, c.supervisor, c.restart.value, c.restarts)
        for c in sup.which_children()
    ]
    assert listed == [
        ("c1", "sup/c1", "running", False, "permanent", 0),
        ("c2", "sup/c2", "running", False, "permanent", 1),
        ("c3", "sup/c3", "running", False, "permanent", 0),
        ("dyn", "sup/dyn", "running", False, "transient", 0),
        ("sub", "sup/sub", "running", True, "permanent", 0),
    ]
    assert sup.which_children()[0].kind == Worker.kind()


def test_count_children(rt: Runtime) -> None:
    """count_children: specs kept, active children, supervisors and workers among them; a
    grandchild counts for its own supervisor only."""
    sup = start(rt, OneForOne)
    assert sup.start_child(child(OneForOne, id="sub", shutdown=None)) == ok("sup/sub")
    sub = SupervisorRef(rt.ref("sup/sub"))
    sub.which_children()  # its children are started
    assert sup.count_children() == counts(4, 4, 1, 3)
    assert sub.count_children() == counts(3, 3, 0, 3)
    assert sup.terminate_child("c1") == ok("sup/c1")
    after = sup.count_children()
    assert (after.specs, after.active, after.supervisors) == (4, 3, 1)


def test_child_adm_simple_uses_the_pool_spec(rt: Runtime) -> None:
    """A pool member is started from the pool's one child spec: by id, with its own initial
    state; a spec of another kind is refused; an id alone means nothing to other strategies."""
    sup = start(rt, Pool)
    assert sup.start_child("w1", state=Log(handled=["seeded"])) == ok("sup/w1")
    assert rt.ref("sup/w1").ask(Ping()).get(5)["handled"] == ["seeded"]
    [info] = sup.which_children()
    assert (info.restart.value, info.supervisor) == ("permanent", False)  # the pool's spec
    refused = sup.start_child(child(FailsOnRestart, id="w2"))
    assert not refused.ok and refused.error is not None
    assert refused.error.startswith("simple_one_for_one: members are started from the pool's")
    assert [c.id for c in sup.which_children()] == ["w1"]

    other = start(rt, Empty, "other")
    assert other.start_child("x") == err("a one_for_one supervisor needs a child spec to start")
    with pytest.raises(InvalidInputError, match="give the state in the child spec"):
        other.start_child(child(Worker, id="y"), state=Log())


def test_sup_start_simple_with_two_specs_fails(rt: Runtime) -> None:
    """OTP refuses a simple_one_for_one supervisor whose child spec list is not one spec."""
    rt.spawn(BadPool, id="sup", spec=ChildSpec(restart="temporary"))
    assert ended(rt, "sup") == "failed"  # its start failed: an abnormal exit, given up
    row = actor(rt, "sup")
    assert row is not None
    assert row.reason["error"]["type"].endswith("EscalationError")
    message = row.reason["error"]["message"]
    assert "must return exactly one child spec (the pool's), not 2" in message


def test_count_children_supervisor(rt: Runtime) -> None:
    """Pool members that are supervisors are counted as supervisors, not workers."""
    sup = start(rt, SupervisorPool)
    for i in range(3):
        assert sup.start_child(f"s{i}").ok
    assert sup.count_children() == counts(3, 3, 3, 0)
    assert all(c.supervisor for c in sup.which_children())


def test_count_restarting_children(rt: Runtime) -> None:
    """A child waiting out its restart backoff is a spec and a worker, but not active."""
    sup = start(rt, LongLoop)
    FAILING.add("sup/bad")
    rt.ref("sup/bad").tell(Crash())
    wait_until(lambda: status(rt, "sup/bad") == "restarting", what="bad restarting")
    assert sup.count_children() == counts(2, 1, 0, 2)
    FAILING.clear()
    restarted(rt, "sup/bad", timeout=30)  # its 10 s backoff first
    wait_until(lambda: sup.count_children() == counts(2, 2, 0, 2), what="bad active again")


def test_already_started_outside_supervisor(rt: Runtime) -> None:
    """A child id already taken by an actor started elsewhere is already_started."""
    sup = start(rt, Empty)
    rt.spawn(Worker, id="sup/x")
    assert sup.start_child(child(Worker, id="x")) == err("already_started", "sup/x")
    assert sup.which_children() == []


def test_do_not_save_child_specs_for_temporary_children(rt: Runtime) -> None:
    """A temporary child's spec is forgotten when it ends, however it ends (terminated, normal
    exit, crash): it cannot be restarted, and starting it again is ok, not already_present."""
    sup = start(rt, Empty)
    # terminated by the supervisor
    t1 = child(Worker, id="t1", restart="temporary")
    assert sup.start_child(t1) == ok("sup/t1")
    assert sup.terminate_child("t1") == ok("sup/t1")
    assert sup.restart_child("t1") == err("not_found")
    assert actor(rt, "sup/t1") is None
    assert sup.start_child(t1) == ok("sup/t1")
    # normal exit
    t2 = child(Worker, id="t2", restart="temporary")
    assert sup.start_child(t2) == ok("sup/t2")
    rt.ref("sup/t2").ask(Stop()).get(5)
    assert ended(rt, "sup/t2") is None
    assert sup.restart_child("t2") == err("not_found")
    assert sup.start_child(t2) == ok("sup/t2")
    # crash
    t3 = child(Worker, id="t3", restart="temporary")
    assert sup.start_child(t3) == ok("sup/t3")
    with pytest.raises(Boom):
        rt.ref("sup/t3").ask(Poison()).get(5)
    assert ended(rt, "sup/t3") is None
    assert sup.start_child(t3) == ok("sup/t3")
    assert [(c.id, c.status) for c in sup.which_children()] == [
        ("t1", "running"),
        ("t2", "running"),
        ("t3", "running"),
    ]


# -- restart types -----------------------------------------------------------------------------


def dynamic(rt: Runtime, restart: str) -> SupervisorRef:
    sup = start(rt, Empty)
    assert sup.start_child(child(Worker, id="c1", restart=restart)) == ok("sup/c1")
    return sup


def test_permanent_normal(rt: Runtime) -> None:
    """A permanent child that stops normally is restarted."""
    sup = dynamic(rt, "permanent")
    assert rt.ref("sup/c1").ask(Stop("normal")).get(5) == "stopping"
    restarted(rt, "sup/c1")
    assert [(c.id, c.status) for c in sup.which_children()] == [("c1", "running")]
    assert sup.count_children() == counts(1, 1, 0, 1)


def test_permanent_shutdown(rt: Runtime) -> None:
    """A permanent child that exits with shutdown is restarted."""
    sup = dynamic(rt, "permanent")
    rt.ref("sup/c1").ask(Stop("shutdown")).get(5)
    restarted(rt, "sup/c1")
    rt.ref("sup/c1").ask(Stop("shutdown")).get(5)
    restarted(rt, "sup/c1", 2)
    assert sup.count_children() == counts(1, 1, 0, 1)


def test_permanent_abnormal(rt: Runtime) -> None:
    """A permanent child that crashes is restarted (and handles the message again)."""
    sup = dynamic(rt, "permanent")
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
    assert [(c.status, c.restarts) for c in sup.which_children()] == [("running", 1)]
    assert sup.count_children() == counts(1, 1, 0, 1)


def test_transient_normal(rt: Runtime) -> None:
    """A transient child that stops normally is not restarted; its spec stays."""
    sup = dynamic(rt, "transient")
    rt.ref("sup/c1").ask(Stop("normal")).get(5)
    assert ended(rt, "sup/c1") == "stopped"
    assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [("c1", "stopped", 0)]
    assert sup.count_children().active == 0
    assert sup.restart_child("c1") == ok("sup/c1")


def test_transient_shutdown(rt: Runtime) -> None:
    """A transient child that exits with shutdown is not restarted."""
    sup = dynamic(rt, "transient")
    rt.ref("sup/c1").ask(Stop("shutdown")).get(5)
    assert ended(rt, "sup/c1") == "stopped"
    assert [(c.status, c.restarts) for c in sup.which_children()] == [("stopped", 0)]


def test_transient_abnormal(rt: Runtime) -> None:
    """A transient child that crashes is restarted."""
    sup = dynamic(rt, "transient")
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
    assert [(c.status, c.restarts) for c in sup.which_children()] == [("running", 1)]


def test_temporary_normal(rt: Runtime) -> None:
    """A temporary child that stops normally is removed with its spec."""
    sup = dynamic(rt, "temporary")
    rt.ref("sup/c1").ask(Stop("normal")).get(5)
    assert ended(rt, "sup/c1") is None
    assert sup.which_children() == []
    assert sup.count_children() == counts(0, 0, 0, 0)


def test_temporary_shutdown(rt: Runtime) -> None:
    """A temporary child that exits with shutdown is removed with its spec."""
    sup = dynamic(rt, "temporary")
    rt.ref("sup/c1").ask(Stop("shutdown")).get(5)
    assert ended(rt, "sup/c1") is None
    assert sup.which_children() == []


def test_temporary_abnormal(rt: Runtime) -> None:
    """A temporary child that crashes is not restarted: it is removed, the message it failed
    on is rejected with its error, and it costs the supervisor no restart."""
    sup = dynamic(rt, "temporary")
    with pytest.raises(Boom):
        rt.ref("sup/c1").ask(Poison()).get(5)
    assert ended(rt, "sup/c1") is None
    assert sup.which_children() == []
    assert actor(rt, "sup").state["history"] == []


@pytest.mark.parametrize("cls", [AllBystander, RestBystander], ids=["one_for_all", "rest_for_one"])
def test_temporary_bystander(rt: Runtime, cls: type) -> None:
    """A temporary child stopped as a bystander of one_for_all/rest_for_one is removed, not
    restarted, and does not use up the intensity (1 here)."""
    sup = start(rt, cls)
    rt.ref("sup/c1").ask(Stop("normal")).get(5)
    restarted(rt, "sup/c1")
    wait_until(lambda: actor(rt, "sup/c2") is None, what="temporary bystander removed")
    assert status(rt, "sup") == "running"
    assert [c.id for c in sup.which_children()] == ["c1"]
    assert len(actor(rt, "sup").state["history"]) == 1


# -- strategies, intensity and escalation ------------------------------------------------------


def test_one_for_one(rt: Runtime) -> None:
    """one_for_one: only the failed child restarts; with intensity 2 the third restart
    escalates, and every child is stopped."""
    start(rt, OneForOne)
    before = epochs(rt, "sup/c1", "sup/c2", "sup/c3")
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
    after = epochs(rt, "sup/c1", "sup/c2", "sup/c3")
    assert after["sup/c1"] > before["sup/c1"]
    assert (after["sup/c2"], after["sup/c3"]) == (before["sup/c2"], before["sup/c3"])

    assert rt.ref("sup/c2").ask(Crash()).get(5) == "survived"
    with pytest.raises(Boom):
        rt.ref("sup/c3").ask(Crash()).get(5)  # the third restart: escalation, c3 given up
    escalated(rt)
    assert [(r.id, r.status) for r in actors(rt, prefix="sup/")] == [
        ("sup/c1", "stopped"),
        ("sup/c2", "stopped"),
        ("sup/c3", "failed"),
    ]


def test_one_for_one_escalation(rt: Runtime) -> None:
    """A child whose restarts fail uses up the intensity (failed restarts count): the
    supervisor and its other child exit."""
    start(rt, OneForOneEscalation)
    rt.ref("sup/c1").tell(Crash())
    escalated(rt)
    assert TALLY.counts["start-failed:sup/c1"] == 4
    assert status(rt, "sup/c2") == "stopped"
    assert status(rt, "sup/c1") == "failed"


def test_one_for_all(rt: Runtime) -> None:
    """one_for_all: when one child fails the other is stopped too and both restart; the
    intensity (2) counts one restart per failure."""
    sup = start(rt, OneForAll)
    before = epochs(rt, "sup/c1", "sup/c2")
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
    restarted(rt, "sup/c2")
    after = epochs(rt, "sup/c1", "sup/c2")
    assert all(after[k] > before[k] for k in before)
    assert [(c.id, c.status, c.restarts) for c in sup.which_children()] == [
        ("c1", "running", 1),
        ("c2", "running", 1),
    ]
    assert sup.count_children() == counts(2, 2, 0, 2)
    assert len(actor(rt, "sup").state["history"]) == 1

    assert rt.ref("sup/c2").ask(Crash()).get(5) == "survived"
    rt.ref("sup/c1").tell(Crash())
    escalated(rt)


def test_one_for_all_escalation(rt: Runtime) -> None:
    """one_for_all with a child whose restart fails: each failed start restarts the other
    child again (``one_for_all_other_child_fails_restart``) until the supervisor escalates."""
    start(rt, OneForAllEscalation)
    rt.ref("sup/c1").tell(Crash())
    escalated(rt)
    assert TALLY.counts["start-failed:sup/c2"] == 4
    c1 = actor(rt, "sup/c1")
    assert c1 is not None and c1.status == "stopped" and c1.restarts == 4
    assert status(rt, "sup/c2") == "failed"


def test_rest_for_one(rt: Runtime) -> None:
    """rest_for_one: the failed child and those started after it restart; the earlier ones
    are untouched; the third restart escalates."""
    sup = start(rt, RestForOne)
    assert sup.count_children() == counts(3, 3, 0, 3)
    before = epochs(rt, "sup/c1", "sup/c2", "sup/c3")
    assert rt.ref("sup/c2").ask(Crash()).get(5) == "survived"
    restarted(rt, "sup/c3")
    after = epochs(rt, "sup/c1", "sup/c2", "sup/c3")
    assert after["sup/c1"] == before["sup/c1"]
    assert after["sup/c2"] > before["sup/c2"] and after["sup/c3"] > before["sup/c3"]
    assert [c.restarts for c in sup.which_children()] == [0, 1, 1]

    assert rt.ref("sup/c3").ask(Crash()).get(5) == "survived"
    assert [c.restarts for c in sup.which_children()] == [0, 1, 2]
    rt.ref("sup/c2").tell(Crash())
    escalated(rt)


def test_rest_for_one_escalation(rt: Runtime) -> None:
    """rest_for_one with a later child whose restart fails: the supervisor escalates and
    both children exit."""
    start(rt, RestForOneEscalation)
    rt.ref("sup/c1").tell(Crash())
    escalated(rt)
    assert TALLY.counts["start-failed:sup/c2"] == 4
    assert {r.status for r in actors(rt, prefix="sup/")} <= {"stopped", "failed"}


def test_simple_one_for_one(rt: Runtime) -> None:
    """A pool member that crashes is restarted on its own; the intensity (2) is shared by
    the pool."""
    sup = start(rt, Pool)
    for i in (1, 2):
        assert sup.start_child(f"w{i}") == ok(f"sup/w{i}")
    before = epochs(rt, "sup/w2")
    assert rt.ref("sup/w1").ask(Crash()).get(5) == "survived"
    assert epochs(rt, "sup/w2") == before
    assert sup.count_children() == counts(2, 2, 0, 2)
    assert rt.ref("sup/w2").ask(Crash()).get(5) == "survived"
    rt.ref("sup/w1").tell(Crash())
    escalated(rt)
    assert {r.status for r in actors(rt, prefix="sup/")} == {"stopped", "failed"}


def test_simple_one_for_one_escalation(rt: Runtime) -> None:
    """A pool member whose restarts fail escalates the pool; the other member exits."""
    sup = start(rt, RestartFailingPool)
    assert sup.start_child("w1").ok
    assert sup.start_child("w2").ok
    rt.ref("sup/w1").tell(Crash())
    escalated(rt)
    assert status(rt, "sup/w2") == "stopped"


def test_multiple_restarts(rt: Runtime) -> None:
    """Intensity 1 in 1.5 s: crashes further apart than the period never add up (the window
    slides), while two in a row escalate."""
    start(rt, WideWindow)
    for n in range(1, 5):
        assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"
        assert actor(rt, "sup/c1").restarts == n
        # The spacing under test, not a wait for a condition: the next crash comes after the
        # reply, which comes after this crash was counted, so they are > 1.8 s apart.
        time.sleep(1.8)
    assert status(rt, "sup") == "running"
    assert len(actor(rt, "sup").state["history"]) == 1
    rt.ref("sup/c1").tell(Crash(times=2))
    escalated(rt)


def test_hanging_restart_loop(rt: Runtime) -> None:
    """A child whose restart keeps failing (with a backoff between tries) can be looked at,
    terminated and restarted meanwhile, and its supervisor stopped: nothing spins."""
    sup = start(rt, LongLoop)
    spec = child(FailingStart, id="bad")
    FAILING.add("sup/bad")
    rt.ref("sup/bad").tell(Crash())
    wait_until(lambda: status(rt, "sup/bad") == "restarting", what="bad restarting")
    store = rt.store
    assert store is not None
    # when its backoff ends (in about 10 s), once the supervisor has decided the restart
    due_in = wait_until(lambda: store.restart_due_in("sup/bad"), what="bad's backoff set")
    due = time.monotonic() + due_in
    assert sup.start_child(spec) == err("already_present", "sup/bad")
    assert sup.restart_child("bad") == err("restarting", "sup/bad")
    assert sup.delete_child("bad") == err("restarting")
    assert [(c.id, c.status) for c in sup.which_children()] == [
        ("ok", "running"),
        ("bad", "restarting"),
    ]
    assert sup.count_children() == counts(2, 1, 0, 2)

    assert sup.terminate_child("bad") == ok("sup/bad")
    assert [(c.id, c.status) for c in sup.which_children()] == [
        ("ok", "running"),
        ("bad", "stopped"),
    ]
    tries = TALLY.counts["start:sup/bad"]
    # Past the end of the backoff it was waiting out (and a margin for a try to show): a
    # terminated child is not tried again.
    time.sleep(max(0.0, due + 0.5 - time.monotonic()))
    assert TALLY.counts["start:sup/bad"] == tries

    FAILING.clear()
    assert sup.restart_child("bad") == ok("sup/bad")
    wait_until(lambda: TALLY.counts["start:sup/bad"] > tries, what="bad started")
    FAILING.add("sup/bad")
    rt.ref("sup/bad").tell(Crash())
    wait_until(lambda: status(rt, "sup/bad") == "restarting", what="bad restarting again")
    began = time.monotonic()
    assert rt.stop("sup")
    assert time.monotonic() - began < 5.0  # well short of the 10 s backoff: not waited out
    assert {r.status for r in actors(rt, "sup", "sup/ok", "sup/bad")} == {"stopped"}


def test_hanging_restart_loop_escalates(rt: Runtime) -> None:
    """Left alone, a child that fails in a loop escalates after ``intensity`` restarts (3)
    instead of spinning forever."""
    start(rt, HangingLoop)
    FAILING.add("sup/bad")
    rt.ref("sup/bad").tell(Crash())
    escalated(rt)
    assert TALLY.counts["start:sup/bad"] == 1 + 3  # its first start, then three failed ones
    assert status(rt, "sup/ok") == "stopped"


def test_order_of_children(rt: Runtime) -> None:
    """Children start in order; a rest_for_one restart stops the later ones in reverse order
    and starts them again in order; stopping the supervisor stops all in reverse order."""
    sup = start(rt, Ordered)
    ids = [f"sup/c{i}" for i in range(1, 6)]
    assert [c.actor for c in sup.which_children()] == ids
    assert started_in_order(rt) == ids
    wait_until(lambda: len(EVENTS.of("start")) == 5, what="children started")

    assert rt.ref("sup/c3").ask(Crash()).get(5) == "survived"
    wait_until(lambda: len(EVENTS.of("start")) == 8, what="c3..c5 started again")
    assert [a for a in EVENTS.of("stop") if a != "sup/c3"] == ["sup/c5", "sup/c4"]
    assert started_in_order(rt)[5:] == ["sup/c3", "sup/c4", "sup/c5"]

    EVENTS.clear()
    assert rt.stop("sup")
    assert EVENTS.of("stop") == list(reversed(ids))
    rows = sorted(actors(rt, prefix="sup/"), key=lambda r: r.updated_at)
    assert [r.id for r in rows] == list(reversed(ids))
    assert {r.status for r in rows} == {"stopped"}


def test_order_of_children_escalation(rt: Runtime) -> None:
    """An escalating supervisor stops its children in reverse start order."""
    start(rt, Ordered)
    wait_until(lambda: len(EVENTS.of("start")) == 5, what="children started")
    rt.ref("sup/c2").tell(Poison())
    escalated(rt)
    rows = sorted(actors(rt, prefix="sup/"), key=lambda r: r.updated_at)
    assert [r.id for r in rows] == [f"sup/c{i}" for i in (5, 4, 3, 2, 1)]
    assert [(r.id, r.status) for r in rows][3:] == [("sup/c2", "failed"), ("sup/c1", "stopped")]


def started_in_order(rt: Runtime) -> list[str]:
    """The children of ``sup`` in the order their start messages were written."""
    assert rt.store is not None
    rows = rt.store.read(
        lambda conn: conn.execute(
            "SELECT recipient FROM promises WHERE recipient LIKE 'sup/c%%' "
            "AND id LIKE '%%/started/%%' ORDER BY seq"
        ).fetchall()
    )
    return [r[0] for r in rows]


# -- sup_stop: shutdown times --------------------------------------------------------------------


def stop_busy(rt: Runtime, child_id: str, seconds: float) -> tuple[float, object, str]:
    """Make ``sup/{child_id}`` busy for ``seconds`` in one message, stop the supervisor, and
    return how long the stop took, the busy message's reply (or error) and its id."""
    start(rt, ShutdownSup)
    reply = rt.ref(f"sup/{child_id}").ask(Busy(child_id, seconds))
    wait_until(lambda: TALLY.counts[f"{child_id}:begin"] == 1, what=f"{child_id} busy")
    began = time.monotonic()
    assert rt.stop("sup")
    took = time.monotonic() - began
    try:
        outcome: object = reply.get(5)
    except ActorStoppedError as exc:
        outcome = exc
    # the busy handler has run to its end (or been cut off) and its activation is gone
    wait_until(lambda: f"sup/{child_id}" in EVENTS.of("stop"), what=f"{child_id} ended")
    return took, outcome, reply.id


def test_sup_stop_brutal_kill(rt: Runtime) -> None:
    """shutdown 0 (brutal kill): the busy child is fenced at once; its message is rejected
    and nothing it does afterwards is kept (no later step, no state)."""
    took, outcome, message_id = stop_busy(rt, "brutal", 4.0)
    assert took < 2.5  # not waiting for the busy message (4 s)
    assert isinstance(outcome, ActorStoppedError)
    row = actor(rt, "sup/brutal")
    assert row is not None and row.status == "stopped" and row.state is None
    assert steps_of(rt, message_id) == ["brutal:begin"]  # only the step before the stop


def test_sup_stop_timeout(rt: Runtime) -> None:
    """shutdown 0.3 s: a child busy for longer is given 0.3 s, then fenced like a kill."""
    took, outcome, message_id = stop_busy(rt, "short", 4.0)
    assert 0.25 <= took < 2.5  # its 0.3 s, not the busy 4 s
    assert isinstance(outcome, ActorStoppedError)
    row = actor(rt, "sup/short")
    assert row is not None and row.status == "stopped" and row.state is None
    assert steps_of(rt, message_id) == ["short:begin"]


def test_sup_stop_timeout_finishes_in_time(rt: Runtime) -> None:
    """shutdown 5 s: a child busy for 0.4 s finishes its current message before it stops."""
    took, outcome, message_id = stop_busy(rt, "long", 0.4)
    assert 0.3 <= took < 3.0
    assert outcome == "done"
    row = actor(rt, "sup/long")
    assert row is not None and row.status == "stopped"
    assert row.state == {"handled": ["long"]}
    assert steps_of(rt, message_id) == ["long:begin", "long:end"]


def test_sup_stop_infinity(rt: Runtime) -> None:
    """shutdown infinity: the supervisor waits as long as the busy child takes."""
    took, outcome, _ = stop_busy(rt, "infinity", 1.0)
    assert took >= 0.9
    assert outcome == "done"
    row = actor(rt, "sup/infinity")
    assert row is not None and row.status == "stopped"
    assert row.state == {"handled": ["infinity"]}


def test_terminate_child_brutal_kill(rt: Runtime) -> None:
    """terminate_child uses the child's shutdown too: brutal kill rejects the busy message
    at once, and the supervisor and siblings go on."""
    sup = start(rt, ShutdownSup)
    reply = rt.ref("sup/brutal").ask(Busy("brutal", 4.0))
    wait_until(lambda: TALLY.counts["brutal:begin"] == 1, what="brutal busy")
    began = time.monotonic()
    assert sup.terminate_child("brutal") == ok("sup/brutal")
    assert time.monotonic() - began < 2.5  # not waiting for the busy message (4 s)
    with pytest.raises(ActorStoppedError):
        reply.get(5)
    wait_until(lambda: "sup/brutal" in EVENTS.of("stop"), what="brutal's activation ended")
    assert steps_of(rt, reply.id) == ["brutal:begin"]
    assert actor(rt, "sup/brutal").state is None
    assert sup.count_children() == counts(4, 3, 0, 4)
    assert rt.ref("sup/long").ask(Work("k")).get(5) == ["k"]


# -- significant children and auto_shutdown ----------------------------------------------------


def test_significant_temporary(rt: Runtime) -> None:
    """any_significant: a significant temporary child that ends by itself, normally or by a
    crash, shuts the supervisor down (and all its children); terminating it does not."""
    sup = start(rt, AnySignificant, id="sup")
    assert sup.terminate_child("sig_temp") == ok("sup/sig_temp")
    assert status(rt, "sup") == "running"

    start(rt, AnySignificant, id="a")
    rt.ref("a/sig_temp").ask(Stop()).get(5)
    assert ended(rt, "a") == "stopped"
    assert actor(rt, "a").reason["exit"] == "shutdown"
    assert {r.status for r in actors(rt, prefix="a/")} == {"stopped"}

    start(rt, AnySignificant, id="b")
    rt.ref("b/sig_temp").tell(Poison())
    assert ended(rt, "b") == "stopped"
    assert status(rt, "sup") == "running"


def test_significant_transient(rt: Runtime) -> None:
    """any_significant: a significant transient child that stops normally shuts the
    supervisor down; one that crashes is restarted and the supervisor stays."""
    start(rt, AnySignificant)
    assert rt.ref("sup/sig_trans").ask(Crash()).get(5) == "survived"
    assert status(rt, "sup") == "running"
    rt.ref("sup/sig_trans").ask(Stop()).get(5)
    assert ended(rt, "sup") == "stopped"
    assert {r.status for r in actors(rt, prefix="sup/")} == {"stopped"}


def test_nonsignificant_temporary(rt: Runtime) -> None:
    """The end of a temporary child that is not significant never shuts the supervisor down."""
    sup = start(rt, AnySignificant)
    rt.ref("sup/plain_temp").ask(Stop()).get(5)
    assert ended(rt, "sup/plain_temp") is None
    assert status(rt, "sup") == "running"
    assert sup.count_children().active == 4


def test_nonsignificant_transient(rt: Runtime) -> None:
    """The normal end of a transient child that is not significant never shuts it down."""
    start(rt, AnySignificant)
    rt.ref("sup/plain_trans").ask(Stop()).get(5)
    assert ended(rt, "sup/plain_trans") == "stopped"
    rt.ref("sup/perm").ask(Stop()).get(5)
    restarted(rt, "sup/perm")
    assert status(rt, "sup") == "running"


def test_all_significant(rt: Runtime) -> None:
    """all_significant: the supervisor shuts down when the last significant child has ended."""
    start(rt, AllSignificant)
    rt.ref("sup/s1").ask(Stop()).get(5)
    assert ended(rt, "sup/s1") == "stopped"
    assert status(rt, "sup") == "running"
    rt.ref("sup/s2").ask(Stop()).get(5)
    assert ended(rt, "sup") == "stopped"
    assert status(rt, "sup/perm") == "stopped"


def test_significant_bystander(rt: Runtime) -> None:
    """A significant child stopped as a bystander of one_for_all does not shut the
    supervisor down: it is restarted with the rest."""
    start(rt, BystanderSup)
    assert rt.ref("sup/crasher").ask(Crash()).get(5) == "survived"
    restarted(rt, "sup/sig")
    assert status(rt, "sup") == "running"


def test_significant_escalation(rt: Runtime) -> None:
    """A significant child supervisor that shuts itself down shuts down its parent too."""
    start(rt, SignificantOuter)
    SupervisorRef(rt.ref("sup/inner")).which_children()
    rt.ref("sup/inner/task").ask(Stop()).get(5)
    assert ended(rt, "sup") == "stopped"
    assert {r.status for r in actors(rt, prefix="sup/")} == {"stopped"}


# -- tree ----------------------------------------------------------------------------------------


def test_tree(rt: Runtime) -> None:
    """A tree: one_for_all over two child supervisors. A worker crash restarts only that
    worker; a child supervisor that escalates is restarted with its sibling by the top.
    Deviation from OTP: its dynamic children are rows, so they come back too."""
    top = start(rt, Tree)
    sup1 = SupervisorRef(rt.ref("sup/sup1"))
    sup2 = SupervisorRef(rt.ref("sup/sup2"))
    assert top.count_children() == counts(2, 2, 2, 0)
    assert [c.id for c in sup1.which_children()] == ["w1", "w2"]
    assert sup1.count_children() == counts(2, 2, 0, 2)
    assert sup2.count_children() == counts(0, 0, 0, 0)

    assert sup2.start_child(child(Worker, id="c3")) == ok("sup/sup2/c3")
    assert sup2.start_child(child(Worker, id="c4")) == ok("sup/sup2/c4")
    assert sup2.count_children() == counts(2, 2, 0, 2)

    # only the child that dies is restarted
    tree = ["sup/sup1", "sup/sup2", "sup/sup1/w1", "sup/sup1/w2", "sup/sup2/c3"]
    before = epochs(rt, *tree)
    assert rt.ref("sup/sup2/c4").ask(Crash()).get(5) == "survived"
    assert epochs(rt, *tree) == before
    assert [c.restarts for c in sup2.which_children()] == [0, 1]

    # the tree is restarted when sup2 gives up
    with pytest.raises(Boom):
        rt.ref("sup/sup2/c3").ask(Poison()).get(10)
    restarted(rt, "sup/sup2")
    restarted(rt, "sup/sup1")
    assert status(rt, "sup") == "running"
    # the top's state (its restart history) is written when it has handled the exit
    wait_until(lambda: len(actor(rt, "sup").state["history"]) == 1, what="one restart kept")
    assert [(c.id, c.status) for c in top.which_children()] == [
        ("sup1", "running"),
        ("sup2", "running"),
    ]
    assert [(c.id, c.status) for c in sup1.which_children()] == [
        ("w1", "running"),
        ("w2", "running"),
    ]
    wait_until(lambda: sup2.count_children() == counts(2, 2, 0, 2), what="c3, c4 back")
    assert rt.ref("sup/sup2/c3").ask(Work("after")).get(5) == ["after"]


def test_an_escalation_at_the_root_is_reported_and_other_trees_keep_serving(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The root of a tree escalates (its child crashed past the intensity): the runtime logs
    it and ends that tree; another tree in the same runtime goes on answering."""
    other = start(rt, OneForOne, "other")
    start(rt, WideWindow)
    with caplog.at_level("WARNING", logger="promissory.runtime"):
        rt.ref("sup/c1").tell(Crash(times=2))
        escalated(rt)
    [record] = [r for r in caplog.records if "sup failed and is given up" in r.getMessage()]
    assert "EscalationError" in record.getMessage()
    assert rt.ref("other/c1").ask(Ping()).get(5)["id"] == "other/c1"
    assert other.start_child(child(Worker, id="late")) == ok("other/late")
    assert status(rt, "other") == "running"


def test_sup_stop_dynamic(rt: Runtime) -> None:
    """sup_stop_brutal_kill_dynamic / sup_stop_timeout_dynamic: dynamic children are stopped
    with their own shutdown when their supervisor stops: a brutal kill at once, a timeout
    after its time; both busy messages are rejected, and nothing after the stop is kept."""
    sup = start(rt, Empty)
    assert sup.start_child(child(Worker, id="brutal", shutdown=0)).ok
    assert sup.start_child(child(Worker, id="short", shutdown=0.3)).ok
    replies = {c: rt.ref(f"sup/{c}").ask(Busy(c, 4.0)) for c in ("brutal", "short")}
    wait_until(
        lambda: TALLY.counts["brutal:begin"] == 1 and TALLY.counts["short:begin"] == 1,
        what="both busy",
    )
    began = time.monotonic()
    assert rt.stop("sup")
    took = time.monotonic() - began
    assert 0.25 <= took < 2.5  # the timeout child's 0.3 s, not the busy 4 s
    # the busy handlers have run to their end (or been cut off) and their activations are
    # gone: nothing they tried after the stop was kept, and none outlives this test
    wait_until(lambda: {"sup/brutal", "sup/short"} <= set(EVENTS.of("stop")), what="both ended")
    for c, reply in replies.items():
        with pytest.raises(ActorStoppedError):
            reply.get(5)
        assert status(rt, f"sup/{c}") == "stopped"
        assert steps_of(rt, reply.id) == [f"{c}:begin"]


def test_simple_one_for_one_shutdown(rt: Runtime) -> None:
    """Stopping a pool stops every member (in reverse start order) and rejects what was
    still queued for them."""
    sup = start(rt, Pool)
    for i in range(3):
        assert sup.start_child(f"w{i}").ok
    queued = rt.ref("sup/w1").ask(Busy("w1", 0.05))
    queued.get(5)
    assert rt.stop("sup")
    assert {r.id: r.status for r in actors(rt, prefix="sup")} == {
        "sup": "stopped",
        "sup/w0": "stopped",
        "sup/w1": "stopped",
        "sup/w2": "stopped",
    }
    ends = [e for e in EVENTS.of("stop") if e.startswith("sup/w")]
    assert ends == sorted(ends, reverse=True)  # newest first


def test_significant_simple(rt: Runtime) -> None:
    """A simple_one_for_one pool whose child spec is significant is refused at start."""
    rt.spawn(SignificantPool, id="sup", spec=ChildSpec(restart="temporary"))
    assert ended(rt, "sup") == "failed"
    row = actor(rt, "sup")
    assert row is not None
    assert (
        "a simple_one_for_one supervisor has no significant children"
        in (row.reason["error"]["message"])
    )
