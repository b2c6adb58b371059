"""Scenarios the durable supervision tests run in child processes (``promissory.testing``).

Each takes a ``Runtime`` and returns a JSON-able outcome; one that ends by killing its own
process (SIGKILL, like a crash) returns nothing. Ids are fixed, so running a scenario again
resumes the same actors rather than making new ones. ``$SUP_RUN`` numbers the runs of a
test; ``$SUP_BLOCK`` makes workers block inside ``Slow`` messages until the process dies.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from promissory import ChildSpec, Reply, Runtime, SupervisorRef, child
from tests.supervision.actors import (
    TALLY,
    Crash,
    CrashLoop,
    Empty,
    FanOut,
    Log,
    LongBackoff,
    Org,
    Parent,
    Ping,
    Pool,
    Slow,
    Work,
    Worker,
    actor,
    actors,
    status,
    wait_until,
)

TEMPORARY = ChildSpec(restart="temporary")
WORKERS = ["org/t1/w1", "org/t1/w2", "org/t2/w1", "org/t2/w2"]


def die() -> None:
    """End this process the way a crash would."""
    os.kill(os.getpid(), signal.SIGKILL)


def pending(rt: Runtime, actor_id: str) -> int:
    assert rt.store is not None
    row = rt.store.read(
        lambda conn: conn.execute(
            "SELECT count(*) FROM promises WHERE recipient = %s AND state = 'pending'",
            (actor_id,),
        ).fetchone()
    )
    return int(row[0])


def kept(rt: Runtime, promise_id: str) -> bool:
    """Whether ``promise_id`` exists and is settled."""
    assert rt.store is not None
    found = rt.store.get_many([promise_id]).get(promise_id)
    return found is not None and found.state.settled


# -- a crash loop across processes ----------------------------------------------------------------


def crash_once(rt: Runtime) -> dict[str, Any] | None:
    """Crash the child of ``loop`` once; once the restart is recorded, die. When the crash
    escalates instead, return what the store holds."""
    run = os.environ["SUP_RUN"]
    sup_id = os.environ.get("SUP_ID", "loop")
    rt.spawn(CrashLoop, id=sup_id, spec=TEMPORARY)
    SupervisorRef(rt.ref(sup_id)).which_children()
    reply = rt.ref(f"{sup_id}/c").ask(Crash(reason=f"run {run}"), id=f"{sup_id}/c/crash-{run}")
    try:
        answer = reply.get(15)
    except Exception as exc:
        answer = type(exc).__name__
    if answer == "survived":
        # The supervisor has handled the exit (its mailbox is empty): the restart is kept.
        wait_until(lambda: pending(rt, sup_id) == 0, timeout=10, what="exit handled")
        die()
        return None
    wait_until(lambda: status(rt, sup_id) != "running", timeout=10, what="escalated")
    return outcome_of_loop(rt, sup_id, answer)


def crash_loop_in_one_process(rt: Runtime) -> dict[str, Any]:
    """The same crashes, all in one process: at which one does the supervisor escalate?"""
    sup_id = os.environ.get("SUP_ID", "loop1")
    rt.spawn(CrashLoop, id=sup_id, spec=TEMPORARY)
    SupervisorRef(rt.ref(sup_id)).which_children()
    answers = []
    for run in range(1, 10):
        reply = rt.ref(f"{sup_id}/c").ask(Crash(reason=f"run {run}"))
        try:
            answers.append(reply.get(15))
        except Exception as exc:
            answers.append(type(exc).__name__)
            break
        wait_until(lambda: pending(rt, sup_id) == 0, timeout=10, what="exit handled")
    wait_until(lambda: status(rt, sup_id) != "running", timeout=10, what="escalated")
    out = outcome_of_loop(rt, sup_id, answers[-1])
    out["answers"] = answers
    return out


def outcome_of_loop(rt: Runtime, sup_id: str, answer: str) -> dict[str, Any]:
    sup = actor(rt, sup_id)
    child = actor(rt, f"{sup_id}/c")
    assert sup is not None and child is not None
    return {
        "answer": answer,
        "sup": sup.status,
        "exit": sup.reason["exit"] if sup.reason else None,
        "history": len(sup.state["history"]),
        "child": child.status,
        "restarts": child.restarts,
    }


# -- recovery of a three-level tree ---------------------------------------------------------------


def tree_fill(rt: Runtime) -> None:
    """Start org → teams → workers, give each worker three ``Slow`` messages, and die while
    every worker is stuck in its first (run with ``$SUP_BLOCK``)."""
    rt.spawn(Org, id="org", spec=TEMPORARY)
    SupervisorRef(rt.ref("org")).which_children()
    for team in ("org/t1", "org/t2"):
        SupervisorRef(rt.ref(team)).which_children()
    for worker in WORKERS:
        for k in range(3):
            rt.ref(worker).tell(Slow(f"{worker}:{k}"), id=f"{worker}/job-{k}")
    wait_until(
        lambda: all(kept(rt, f"{w}/job-0/1") for w in WORKERS),
        timeout=15,
        what="every worker inside its first job",
    )
    die()


def tree_drain(rt: Runtime) -> dict[str, Any]:
    """After the kill: wait for every job's reply; report the replies and the tree."""
    assert rt.store is not None
    replies = {
        f"{w}/job-{k}": Reply(f"{w}/job-{k}", rt.store).get(30) for w in WORKERS for k in range(3)
    }
    rows = actors(rt, prefix="org")
    return {
        "replies": replies,
        "tree": [[r.id, r.parent, r.status] for r in rows],
        "states": {r.id: r.state for r in rows if r.id in WORKERS},
    }


# -- order through a backoff ----------------------------------------------------------------------


def backoff_fill(rt: Runtime) -> None:
    """Crash the child (backoff 1.5 s), send it five messages while it waits, and die."""
    rt.spawn(LongBackoff, id="bo", spec=TEMPORARY)
    SupervisorRef(rt.ref("bo")).which_children()
    rt.ref("bo/slow").tell(Crash(), id="bo/slow/crash")
    wait_until(lambda: status(rt, "bo/slow") == "restarting", timeout=10, what="in backoff")
    for k in range(5):
        rt.ref("bo/slow").tell(Work(f"k{k}"), id=f"bo/slow/work-{k}")
    die()


def backoff_drain(rt: Runtime) -> dict[str, Any]:
    assert rt.store is not None
    crash = Reply("bo/slow/crash", rt.store).get(30)
    works = [Reply(f"bo/slow/work-{k}", rt.store).get(30) for k in range(5)]
    child = actor(rt, "bo/slow")
    assert child is not None
    return {"crash": crash, "works": works, "state": child.state, "restarts": child.restarts}


# -- a fan-out with one failing child -------------------------------------------------------------


def fan_out_fill(rt: Runtime) -> None:
    """The parent fans out to three children; one fails and is given up; die while the other
    two are stuck in their work (run with ``$SUP_BLOCK``)."""
    parent = rt.spawn(Parent, id="p")
    parent.tell(FanOut(["p/f1", "p/f2", "p/f3"], "p/f2"), id="p/fan-out")
    wait_until(
        lambda: (
            status(rt, "p/f2") == "failed" and all(kept(rt, f"p/fan-out/{n}") for n in (1, 2, 3))
        ),
        timeout=15,
        what="f2 given up",
    )
    wait_until(lambda: TALLY.counts["p/f1:before"] and TALLY.counts["p/f3:before"], timeout=15)
    die()


def fan_out_drain(rt: Runtime) -> dict[str, Any]:
    assert rt.store is not None
    out = Reply("p/fan-out", rt.store).get(30)
    return {"out": out, "tree": [[r.id, r.status] for r in actors(rt, prefix="p")]}


# -- dynamic children across a kill ---------------------------------------------------------------


def dynamic_fill(rt: Runtime) -> None:
    """Start a pool and a one_for_one supervisor with dynamic children (a temporary one among
    them), give one member some state, and die."""
    pool = SupervisorRef(rt.spawn(Pool, id="dpool", spec=TEMPORARY))
    for k in range(3):
        assert pool.start_child(f"m{k}", state=Log(handled=[f"seed-{k}"])).ok
    assert pool.terminate_child("m2").ok  # stopped on purpose: stays stopped
    plain = SupervisorRef(rt.spawn(Empty, id="dsup", spec=TEMPORARY))
    assert plain.start_child(child(Worker, id="keep", restart="transient")).ok
    assert plain.start_child(child(Worker, id="temp", restart="temporary")).ok
    die()


def dynamic_after(rt: Runtime) -> dict[str, Any]:
    """After the kill: what the supervisors list, and what the members answer."""
    pool, plain = SupervisorRef(rt.ref("dpool")), SupervisorRef(rt.ref("dsup"))
    listed = {
        sup: [[c.id, c.status, c.restart.value] for c in ref.which_children()]
        for sup, ref in (("dpool", pool), ("dsup", plain))
    }
    answers = {
        a: rt.ref(a).ask(Ping()).get(15)["handled"] for a in ("dpool/m0", "dpool/m1", "dsup/keep")
    }
    again = pool.start_child("m0")
    return {"listed": listed, "answers": answers, "again": [again.ok, again.error]}
