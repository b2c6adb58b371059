"""Canceling an actor (not a run): by ``rt.cancel``, by ``promissory cancel ACTOR_ID`` from
another process, and while no runtime runs. The cancel of its messages and the mark that its
tree ends are kept in one transaction; the node hosting it ends the tree, children first, after
their handlers cleaned up; a cancel kept while nothing runs takes effect on the next start.
"""

from __future__ import annotations

import json
import subprocess
import sys

from promissory.errors import ActorNotFoundError
from promissory.runtime import Runtime
from promissory.store import Store
from tests.cancel import kit
from tests.cancel.kit import Fan, FanOut, eventually, sql

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
    # Each worker's handler saw Cancelled and kept its cleanup step, once.
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

    assert out.strip() == "team: actor canceled, with 1 pending message(s); it ends"
    eventually(lambda: set(_tree(dsn).values()) == {"stopped"}, what="the tree ended")
    _check_ended(dsn, run)
    [(value,)] = sql(dsn, "SELECT value FROM promises WHERE id = %s", run)
    assert value["message"] == "bye"


def test_an_actor_canceled_while_no_runtime_runs_ends_on_the_next_start(dsn: str) -> None:
    kit.reset()
    with Runtime(dsn) as rt:
        run = _start(rt)
    # Closed: the workers' messages are pending, their tree alive. Cancel it with only a
    # store, as another process would.
    with Store(dsn) as store:
        outcome = store.cancel_actor("team", reason="while down")
    assert outcome.applied and outcome.canceled == [run]
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
