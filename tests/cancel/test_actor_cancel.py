"""Canceling an actor (not a run): by ``rt.cancel``, by ``promissory cancel ACTOR_ID`` from
another process, and while no runtime runs. The cancel of its messages and the mark that its
tree ends are kept in one transaction; the node hosting it ends the tree, children first, after
their handlers cleaned up; a cancel kept while nothing runs takes effect on the next start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

from promissory import (
    Backoff,
    ChildDef,
    Context,
    DurableActor,
    Supervisor,
    SupervisorRef,
    child,
    handler,
)
from promissory.errors import ActorNotFoundError
from promissory.runtime import Runtime
from promissory.store import Store
from tests.cancel import kit
from tests.cancel.kit import Fan, FanOut, Job, eventually, sql


class Crashes(DurableActor[None]):
    """Crashes on its first job."""

    @handler
    def work(self, ctx: Context, job: Job) -> None:
        if job.n == 1:
            raise RuntimeError("first job crashes")


class Patient(Supervisor):
    """A supervisor whose child waits a minute before each restart."""

    def children(self) -> Sequence[ChildDef]:
        return [child(Crashes, id="w", backoff=Backoff(min=60, max=60, jitter=0.0))]


WIDTH = 3


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promissory", "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _tree(dsn: str) -> dict[str, str]:
    query = "SELECT id, status FROM actors WHERE id = %s OR id LIKE %s"
    return dict(sql(dsn, query, "team", "team/%"))


def _start(rt: Runtime) -> str:
    rt.spawn(FanOut, id="team")
    run = "team/run"
    rt.ref("team").ask(Fan(WIDTH, 60.0), id=run)
    eventually(
        lambda: len([m for m in kit.marks() if m.name == "work"]) >= WIDTH,
        what="every worker working",
    )
    return run


def _check_ended(dsn: str, run: str) -> None:
    assert set(_tree(dsn).values()) == {"stopped"}, _tree(dsn)
    assert len(_tree(dsn)) == WIDTH + 1
    states = dict(sql(dsn, "SELECT id, state FROM promises WHERE kind = 'message'"))
    assert states[run] == "rejected_canceled"
    calls = {k: v for k, v in states.items() if k.startswith(run + "/")}
    assert len(calls) == WIDTH and set(calls.values()) == {"rejected_canceled"}
    assert sql(dsn, "SELECT id FROM promises WHERE state = 'pending'") == []
    # Each worker's handler saw Canceled and kept its cleanup step, once.
    cleanups = [m.key for m in kit.marks() if m.name == "cleanup"]
    assert sorted(cleanups) == sorted(calls), cleanups


def test_rt_cancel_of_an_actor_ends_its_tree_after_the_cleanups(rt: Runtime, dsn: str) -> None:
    run = _start(rt)

    assert rt.cancel("team", reason="over budget") is True

    # rt.cancel returns once the tree has ended.
    _check_ended(dsn, run)
    assert rt.cancel("team") is False  # nothing left to cancel


def test_promissory_cancel_of_an_actor_id_reaches_the_runtime_hosting_it(
    rt: Runtime, dsn: str
) -> None:
    run = _start(rt)

    out = kit.python("-m", "promissory", "--dsn", dsn, "cancel", "team", "--reason", "bye")

    # Its run, and each worker's call: the mailboxes of the whole tree.
    n = WIDTH + 1
    assert out.strip() == f"team: actor canceled, with {n} pending message(s); it ends"
    eventually(lambda: set(_tree(dsn).values()) == {"stopped"}, what="the tree ended")
    _check_ended(dsn, run)
    [(value,)] = sql(dsn, "SELECT value FROM promises WHERE id = %s", run)
    assert value["message"] == "bye"


def test_an_actor_canceled_while_no_runtime_runs_ends_on_the_next_start(dsn: str) -> None:
    kit.reset()
    rt = Runtime(dsn).open()
    run = _start(rt)
    rt.close(timeout=0.5)  # the workers' handlers sleep on, fenced off
    # Closed: the workers' messages are pending, their tree alive. Cancel it with only a
    # store, as another process would.
    with Store(dsn) as store:
        outcome = store.cancel_actor("team", reason="while down")
    assert outcome.applied and run in outcome.canceled
    assert len(outcome.canceled) == WIDTH + 1  # and every worker's call
    assert set(_tree(dsn).values()) == {"running"}

    with Runtime(dsn):
        eventually(lambda: set(_tree(dsn).values()) == {"stopped"}, what="the tree ended")
    _check_ended(dsn, run)


def test_canceling_an_unknown_or_ended_actor_says_so(rt: Runtime, dsn: str) -> None:
    with Store(dsn) as store:
        try:
            store.cancel_actor("nobody")
        except ActorNotFoundError as exc:
            assert "no actor has the id 'nobody'" in str(exc)
        else:
            raise AssertionError("canceling an unknown actor did not raise")
    done = _cli(dsn, "cancel", "nobody")
    assert done.returncode == 1
    assert done.stderr.strip() == "promissory: no promise or actor has the id 'nobody'"

    rt.spawn(FanOut, id="team")
    assert rt.stop("team") is True
    again = _cli(dsn, "cancel", "team")
    assert again.returncode == 1
    assert again.stderr.strip() == "team: actor already ended, left as it was"
    assert json.loads(_cli(dsn, "cancel", "team", "--json").stdout) == {
        "actor": "team",
        "applied": False,
        "canceled": [],
    }


def test_a_message_sent_straight_to_a_child_is_canceled_with_the_tree(
    rt: Runtime, dsn: str
) -> None:
    """Canceling an actor cancels the mailboxes of every actor under it, not only what its
    own messages sent: a job a worker got from elsewhere is canceled too (its handler cleans
    up), rather than rejected as ``ActorStoppedError`` when the worker ends."""
    _start(rt)
    extra = "team/w000/m/extra"
    rt.ref("team/w000").tell(Job(99, 60.0), id=extra)

    assert rt.cancel("team") is True

    [(state, value)] = sql(dsn, "SELECT state, value FROM promises WHERE id = %s", extra)
    assert state == "rejected_canceled", value
    assert value["type"] == "promissory.errors.PromiseCanceledError"
    assert set(_tree(dsn).values()) == {"stopped"}


def test_a_child_waiting_out_a_restart_backoff_is_ended_not_restarted(dsn: str) -> None:
    """Canceled while it waits out a 60 s restart backoff, and while no runtime runs: on the
    next start the mark is found, the restart never happens, and the child ends with its
    tree; its queued message is canceled."""
    kit.reset()
    with Runtime(dsn) as rt:
        sup = SupervisorRef(rt.spawn(Patient, id="pat"))
        sup.which_children()
        rt.ref("pat/w").tell(Job(1, 0.0), id="pat/w/m/crash")
        eventually(
            lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'pat/w'") == [("restarting",)],
            what="the child in its backoff",
        )
        rt.ref("pat/w").tell(Job(2, 0.0), id="pat/w/m/queued")
    with Store(dsn) as store:
        outcome = store.cancel_actor("pat", reason="not worth the wait")
    assert outcome.applied and "pat/w/m/queued" in outcome.canceled

    with Runtime(dsn):
        eventually(
            lambda: (
                dict(sql(dsn, "SELECT id, status FROM actors WHERE id LIKE 'pat%%'"))
                == {"pat": "stopped", "pat/w": "stopped"}
            ),
            what="the tree ended",
        )
        [(restarts,)] = sql(dsn, "SELECT restarts FROM actors WHERE id = 'pat/w'")
    assert restarts == 1  # counted when its backoff began; it never ran again
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'pat/w/m/queued'")
    assert state == "rejected_canceled"
