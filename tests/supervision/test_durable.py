"""Durable supervision, which OTP never needed: restart history, trees, fencing and mailboxes
that outlive the process. The crash tests run a scenario (tests/supervision/scenarios.py) in a
child process that dies by SIGKILL, then run the next step in a fresh process on the same
database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promissory import Runtime
from promissory.store._actors import claim_op
from promissory.store._supervision import bounce_op
from promissory.testing import CrashTest, Run
from tests.supervision.actors import (
    FENCED,
    TALLY,
    Hold,
    Work,
    Worker,
    actor,
    gate,
    sql,
    steps_of,
    wait_until,
)

SCENARIOS = "tests.supervision.scenarios"


def crash_test(dsn: str, workdir: Path, scenario: str, **env: str) -> CrashTest:
    return CrashTest(dsn, f"{SCENARIOS}:{scenario}", workdir=workdir, timeout=60, env=env)


def recovery_of(run: Run) -> dict[str, object]:
    for line in run.stdout.splitlines():
        if line.startswith("RECOVERY "):
            report: dict[str, object] = json.loads(line.removeprefix("RECOVERY "))
            return report
    raise AssertionError(f"no recovery report in:\n{run.stdout}")


def test_crash_loop_across_kills_escalates_as_in_one_process(dsn: str, tmp_path: Path) -> None:
    """A supervisor (intensity 3) whose child crashes once per process, each process then
    killed, escalates at the same crash as when all the crashes happen in one process: the
    restart history lives in the store."""
    one = crash_test(dsn, tmp_path / "one", "crash_loop_in_one_process", SUP_ID="one").run()
    assert not one.killed
    expected = one.outcome
    assert expected["answers"] == ["survived", "survived", "survived", "Boom"]

    runs = []
    for n in range(1, 7):
        run = crash_test(dsn, tmp_path / "many", "crash_once", SUP_RUN=str(n), SUP_ID="loop").run()
        runs.append(run)
        if not run.killed:
            break
        history = sql(
            dsn, "SELECT jsonb_array_length(state->'history') FROM actors WHERE id = 'loop'"
        )
        assert history == [(n,)]  # the restart is in the store before the process dies
    assert [r.killed for r in runs] == [True, True, True, False]
    expected.pop("answers")
    assert runs[-1].outcome == expected
    assert expected == {
        "answer": "Boom",
        "sup": "failed",
        "exit": "escalated",
        "history": 4,
        "child": "failed",
        "restarts": 3,
    }


def test_recovery_rebuilds_a_three_level_tree(dsn: str, tmp_path: Path) -> None:
    """org → teams → workers, killed while every worker is in the middle of its first of
    three messages: the next process's recovery brings the tree back as it was and every
    worker handles all its messages, in order, without running kept steps again."""
    fill = crash_test(dsn, tmp_path, "tree_fill", SUP_BLOCK="1").run()
    assert fill.killed
    drain = crash_test(dsn, tmp_path, "tree_drain").run()
    assert not drain.killed

    report = recovery_of(drain)
    assert report["actors"] == 7  # org, two teams, four workers
    assert report["activated"] == 4  # the workers, which have pending messages

    out = drain.outcome
    order = [row[0] for row in out["tree"]]  # start (seq) order: a parent before its children
    assert all(order.index(parent) < order.index(id) for id, parent, _ in out["tree"] if parent)
    assert sorted(out["tree"], key=str) == sorted(
        [
            ["org", None, "running"],
            ["org/t1", "org", "running"],
            ["org/t2", "org", "running"],
            ["org/t1/w1", "org/t1", "running"],
            ["org/t1/w2", "org/t1", "running"],
            ["org/t2/w1", "org/t2", "running"],
            ["org/t2/w2", "org/t2", "running"],
        ],
        key=str,
    )
    workers = ["org/t1/w1", "org/t1/w2", "org/t2/w1", "org/t2/w2"]
    for w in workers:
        jobs = [f"{w}:{k}" for k in range(3)]
        assert out["replies"][f"{w}/job-2"] == jobs
        assert out["states"][w] == {"handled": jobs}
    effects = crash_test(dsn, tmp_path, "tree_drain").effects()
    for w in workers:
        assert effects[("did", f"{w}:0:before")] == 1  # kept before the kill: not run again
        for k in range(3):
            assert effects[("did", f"{w}:{k}")] == 1


@pytest.mark.parametrize("how", ["claim", "bounce"])
def test_stale_incarnation_cannot_write(rt: Runtime, how: str) -> None:
    """Once a newer activation has claimed an actor (or its supervisor fenced it), the
    activation still running a handler cannot keep its next step; the newer one handles the
    message, once."""
    assert rt.store is not None
    w = rt.spawn(Worker, id="w")
    held = w.ask(Hold("h", "g"))
    wait_until(lambda: TALLY.counts["h:before"] == 1, what="w inside h")
    epoch = actor(rt, "w").epoch
    if how == "claim":
        newer = rt.store.execute(claim_op("w", rt.node_id))
    else:
        newer = rt.store.execute(bounce_op("w"))
    assert newer is not None and newer.epoch == epoch + 1
    gate("g").set()
    wait_until(lambda: FENCED, what="the stale activation tried to keep a step")
    assert FENCED == [("w", held.id)]
    assert w.ask(Work("next")).get(5) == ["h", "next"]
    assert held.get(5) == "held"
    steps = steps_of(rt, held.id)
    assert steps == ["h:before", "h:after"]  # each kept once
    assert actor(rt, "w").state == {"handled": ["h", "next"]}


def test_message_order_kept_through_a_backoff(dsn: str, tmp_path: Path) -> None:
    """Messages sent to a child waiting out a restart backoff, when the process dies during
    the backoff, are handled in order by the restarted child in the next process."""
    fill = crash_test(dsn, tmp_path, "backoff_fill").run()
    assert fill.killed
    drain = crash_test(dsn, tmp_path, "backoff_drain").run()
    assert not drain.killed
    out = drain.outcome
    assert out["crash"] == "survived"
    assert out["works"] == [[f"k{i}" for i in range(j + 1)] for j in range(5)]
    assert out["state"] == {"handled": [f"k{i}" for i in range(5)]}
    assert out["restarts"] == 1


def test_fan_out_failure_leaves_siblings_and_parent(dsn: str, tmp_path: Path) -> None:
    """A fan-out of three where one child fails and is given up; the process dies while the
    two others are working. In the next process the parent gets two values and one
    ``ChildFailedError``, and the parent and the two siblings are still running."""
    fill = crash_test(dsn, tmp_path, "fan_out_fill", SUP_BLOCK="1").run()
    assert fill.killed
    drain = crash_test(dsn, tmp_path, "fan_out_drain").run()
    assert not drain.killed
    assert drain.outcome["out"] == {
        "p/f1": ["p/f1"],
        "p/f2": "ChildFailedError(Boom)",
        "p/f3": ["p/f3"],
    }
    assert drain.outcome["tree"] == [
        ["p", "running"],
        ["p/f1", "running"],
        ["p/f2", "failed"],
        ["p/f3", "running"],
    ]


def test_dynamic_children_survive_a_sigkill_of_the_process(dsn: str, tmp_path: Path) -> None:
    """Unlike OTP, dynamic children are rows in the store: after the process is killed, the
    next one's supervisors list them as they were (a terminated member stays stopped), each
    member answers with the state it was given, and the pool still knows its ids."""
    fill = crash_test(dsn, tmp_path, "dynamic_fill").run()
    assert fill.killed
    after = crash_test(dsn, tmp_path, "dynamic_after").run()
    assert not after.killed
    out = after.outcome
    assert out["listed"] == {
        "dpool": [
            ["m0", "running", "permanent"],
            ["m1", "running", "permanent"],
            ["m2", "stopped", "permanent"],
        ],
        "dsup": [["keep", "running", "transient"], ["temp", "running", "temporary"]],
    }
    assert out["answers"] == {"dpool/m0": ["seed-0"], "dpool/m1": ["seed-1"], "dsup/keep": []}
    assert out["again"] == [False, "already_started"]
