"""How failures reach other actors: watching, a parent awaiting a failed child, and messages
that meet a restart (in flight, or sent during the backoff).
"""

from __future__ import annotations

import pytest

from promissory import ChildSpec, Runtime
from tests.supervision.actors import (
    EVENTS,
    TALLY,
    Backoffs,
    Boom,
    CallChild,
    Crash,
    FanOut,
    Hold,
    InFlight,
    OneForOne,
    Parent,
    Ping,
    Poison,
    SpawnChild,
    Stop,
    Watch,
    Watcher,
    Work,
    Worker,
    actor,
    actors,
    gate,
    start,
    status,
    wait_until,
)


def downs(rt: Runtime, watcher: str = "watcher") -> list[dict[str, object]]:
    """The ``Terminated`` messages the watcher has handled, from its state in the store."""
    row = actor(rt, watcher)
    assert row is not None
    return list(row.state["downs"]) if row.state else []


# -- watch ---------------------------------------------------------------------------------------


def test_watch_delivers_terminated_with_the_exit(rt: Runtime) -> None:
    """ctx.watch: the watcher is sent ``Terminated`` with the exit (and the error, for a
    failure) when the target ends for good: stopped normally, given up, or terminated."""
    watcher = rt.ref("watcher")
    rt.spawn(Watcher, id="watcher")
    rt.spawn(Worker, id="normal", spec=ChildSpec(restart="temporary"))
    rt.spawn(Worker, id="failing", spec=ChildSpec(restart="transient", intensity=0))
    start(rt, OneForOne)
    for target in ("normal", "failing", "sup/c1"):
        assert watcher.ask(Watch(target)).get(5) == "watching"

    rt.ref("normal").ask(Stop()).get(5)
    wait_until(lambda: len(downs(rt)) == 1, what="normal's Terminated")
    with pytest.raises(Boom):
        rt.ref("failing").ask(Poison()).get(5)
    wait_until(lambda: len(downs(rt)) == 2, what="failing's Terminated")
    assert rt.stop("sup")
    wait_until(lambda: len(downs(rt)) == 3, what="sup/c1's Terminated")
    assert downs(rt) == [
        {"actor": "normal", "exit": "normal", "error": None},
        {"actor": "failing", "exit": "abnormal", "error": "tests.supervision.actors.Boom"},
        {"actor": "sup/c1", "exit": "shutdown", "error": None},
    ]


def test_watch_is_not_told_of_a_restart(rt: Runtime) -> None:
    """A restart is not an end: a watcher of a child that crashed and was restarted hears
    nothing, and hears of the later end once."""
    watcher = rt.ref("watcher")
    rt.spawn(Watcher, id="watcher")
    sup = start(rt, OneForOne)
    watcher.ask(Watch("sup/c2")).get(5)
    assert rt.ref("sup/c2").ask(Crash()).get(5) == "survived"
    assert downs(rt) == []
    assert sup.terminate_child("c2").ok
    wait_until(lambda: len(downs(rt)) == 1, what="c2's Terminated")
    assert downs(rt) == [{"actor": "sup/c2", "exit": "shutdown", "error": None}]


def test_watch_an_actor_that_has_ended(rt: Runtime) -> None:
    """Watching an actor that has ended already (or never existed) tells the watcher at once."""
    rt.spawn(Watcher, id="watcher")
    rt.spawn(Worker, id="gone", spec=ChildSpec(restart="temporary"))
    rt.ref("gone").ask(Stop()).get(5)
    wait_until(lambda: status(rt, "gone") == "stopped", what="gone stopped")
    rt.ref("watcher").ask(Watch("gone")).get(5)
    rt.ref("watcher").ask(Watch("nobody")).get(5)
    wait_until(lambda: len(downs(rt)) == 2, what="two Terminated")
    assert [(d["actor"], d["exit"]) for d in downs(rt)] == [
        ("gone", "normal"),
        ("nobody", "shutdown"),
    ]


# -- a parent awaiting a failed child ------------------------------------------------------------


def test_parent_gets_child_failed_and_keeps_running(rt: Runtime) -> None:
    """A plain actor calling its child that fails and is given up gets ``ChildFailedError`` with
    the child's error as ``.cause`` and ``__cause__``; it catches it and goes on."""
    parent = rt.spawn(Parent, id="p")
    assert parent.ask(SpawnChild("p/k")).get(5) == "p/k"
    assert actor(rt, "p/k").parent == "p"
    assert parent.ask(CallChild("p/k", "work", "x")).get(5) == {"value": ["x"]}
    failed = parent.ask(CallChild("p/k", "poison", "bad")).get(10)
    assert failed == {
        "failed": "p/k",
        "cause": "Boom",
        "cause_args": ["bad"],
        "dunder_cause_is_cause": True,
    }
    assert status(rt, "p") == "running"
    assert status(rt, "p/k") == "failed"
    # the child was restarted once (its spec: permanent, 1 in 5 s) before it was given up
    assert actor(rt, "p/k").restarts == 1
    # the parent keeps handling messages; a later call to the ended child fails at once
    assert parent.ask(Ping()).get(5)["results"][-1] == failed
    assert parent.ask(CallChild("p/k", "work", "y")).get(5) == {"stopped": "p/k"}
    assert status(rt, "p") == "running"


def test_parent_child_crash_restarted_is_transparent(rt: Runtime) -> None:
    """A child that crashes once and is restarted answers the parent's call: the new
    incarnation handles the message again, and the parent never sees the crash."""
    parent = rt.spawn(Parent, id="p")
    parent.ask(SpawnChild("p/k")).get(5)
    assert parent.ask(CallChild("p/k", "crash", "once")).get(10) == {"value": "survived"}
    assert actor(rt, "p/k").restarts == 1


def test_fan_out_one_failure_leaves_siblings_and_parent(rt: Runtime) -> None:
    """A fan-out to three children where one fails: the parent gets two values and one
    ``ChildFailedError``; the two siblings and the parent keep running."""
    parent = rt.spawn(Parent, id="p")
    out = parent.ask(FanOut(["p/f1", "p/f2", "p/f3"], "p/f2")).get(15)
    assert out == {"p/f1": ["p/f1"], "p/f2": "ChildFailedError(Boom)", "p/f3": ["p/f3"]}
    assert [(r.id, r.status) for r in actors(rt, prefix="p")] == [
        ("p", "running"),
        ("p/f1", "running"),
        ("p/f2", "failed"),
        ("p/f3", "running"),
    ]
    assert rt.ref("p/f1").ask(Work("again")).get(5) == ["p/f1", "again"]


# -- messages that meet a restart ----------------------------------------------------------------


def test_message_in_flight_during_restart_is_handled_once(rt: Runtime) -> None:
    """A sibling bounced by one_for_all in the middle of a message: the new incarnation
    handles that message once (kept steps are not run again), then the next one; the stale
    incarnation's later write is refused."""
    start(rt, InFlight)
    held = rt.ref("sup/c2").ask(Hold("h", "g"))
    after = rt.ref("sup/c2").ask(Work("next"))
    wait_until(lambda: TALLY.counts["h:before"] == 1, what="c2 in the middle of h")
    assert rt.ref("sup/c1").ask(Crash()).get(5) == "survived"  # bounces c2 after 0.2 s
    assert held.get(5) == "held"  # by the new incarnation
    assert after.get(5) == ["h", "next"]
    gate("g").set()  # the stale incarnation wakes up and tries to go on
    wait_until(lambda: EVENTS.of("woke") == ["sup/c2"], what="the stale incarnation woke")
    wait_until(lambda: EVENTS.of("stop") == ["sup/c1", "sup/c2"], what="the stale one ended")
    assert TALLY.counts["h:before"] == 1  # kept before the restart: not run again
    assert TALLY.counts["h:after"] == 1  # run by the new incarnation only
    assert TALLY.counts["next"] == 1
    assert actor(rt, "sup/c2").state == {"handled": ["h", "next"]}
    assert rt.ref("sup/c2").ask(Ping()).get(5)["handled"] == ["h", "next"]
    assert actor(rt, "sup/c2").restarts == 1


def test_messages_sent_during_backoff_wait_in_order(rt: Runtime) -> None:
    """Messages sent to a child waiting out its restart backoff stay queued, in order, and are
    handled by the new incarnation once the backoff is over."""
    start(rt, Backoffs)
    slow = rt.ref("sup/slow")
    crashed = slow.ask(Crash())
    wait_until(lambda: status(rt, "sup/slow") == "restarting", what="slow in its backoff")
    replies = [slow.ask(Work(f"k{i}")) for i in range(5)]
    assert not any(r.done() for r in replies)
    assert status(rt, "sup/slow") == "restarting"
    assert crashed.get(5) == "survived"
    assert [r.get(5) for r in replies][-1] == [f"k{i}" for i in range(5)]
    assert [TALLY.counts[f"k{i}"] for i in range(5)] == [1] * 5
    assert actor(rt, "sup/slow").restarts == 1
    assert rt.store is not None
    waited = rt.store.read(
        lambda conn: conn.execute(
            "SELECT extract(epoch FROM min(m.settled_at) - max(e.created_at)) "
            "FROM promises m, promises e WHERE m.id = %s AND e.recipient = 'sup' "
            "AND e.id LIKE 'sup/exit/%%'",
            (replies[0].id,),
        ).fetchone()
    )[0]
    assert float(waited) >= 0.55  # the backoff is 0.6 s
