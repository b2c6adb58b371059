"""SIGKILL in the middle of canceling a run that fans out to 100 child actors, all working:
after a restart the cancel completes. Every promise under the run ends settled, no work starts
after the cancel, and each handler that catches ``Canceled`` cleans up once (a cleanup whose
function ran but whose step was not kept when the process died may run again: steps are
at least once; a kept one never runs again).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from promissory.testing import CrashTest
from tests.cancel import kit
from tests.cancel.kit import rows, sql
from tests.cancel.scenarios import RUN, N, tree_alive

SCENARIO = "tests.cancel.scenarios:fan"


def kept_cleanups(dsn: str) -> set[str]:
    """The messages whose cleanup step is kept (resolved) now."""
    return {
        r.id.rsplit("/", 1)[0]
        for r in rows(dsn, RUN)
        if r.label == "cleanup" and r.state == "resolved"
    }


def check_complete(
    dsn: str, marks_file: Path, kept_at_kill: set[str], *, tree_ended: bool = False
) -> None:
    assert kit.quiet(dsn, RUN) == []
    all_rows = rows(dsn, RUN)
    at = kit.settled_at(dsn, RUN)
    calls = [r for r in all_rows if r.kind == "message" and r.id != RUN]
    assert len(calls) == N
    assert {r.state for r in calls} == {"rejected_canceled"}
    # Nothing was kept for the work in flight; each worker kept one cleanup.
    assert [r.id for r in all_rows if r.label == "work"] == []
    cleanups = [r for r in all_rows if r.label == "cleanup"]
    assert sorted(r.id.rsplit("/", 1)[0] for r in cleanups) == sorted(r.id for r in calls)
    assert {r.state for r in cleanups} == {"resolved"}
    marks = kit.marks(str(marks_file))
    # No work started after the cancel was kept, in any process.
    assert kit.started_after(marks, at) == []
    assert len([m for m in marks if m.name == "work"]) == N
    # Each cleanup ran once, but those cut off by the kill before they were kept (at most
    # twice, then).
    ran = Counter(m.key for m in marks if m.name == "cleanup")
    assert set(ran) == {r.id for r in calls}
    again = {key for key, n in ran.items() if n > 1}
    assert again.isdisjoint(kept_at_kill), again & kept_at_kill
    assert set(ran.values()) <= {1, 2}
    workers = sql(dsn, "SELECT status, restarts FROM actors WHERE parent = 'fan'")
    if tree_ended:
        # The actor was canceled: it and every worker ended (stopped, none restarted).
        assert len(workers) == N and set(workers) == {("stopped", 0)}
        assert sql(dsn, "SELECT status FROM actors WHERE id = 'fan'") == [("stopped",)]
        assert tree_alive(dsn) == []
    else:
        # Only the run was canceled: every worker is still alive, and none was restarted.
        assert len(workers) == N and set(workers) == {("running", 0)}


@pytest.mark.parametrize(
    "kill",
    [{"crash_at": "step.kept:1"}, {"crash_at": "step.kept:40"}, {"after": 0.0}],
    ids=["first-cleanup-kept", "40th-cleanup-kept", "right-after-the-cancel"],
)
def test_a_cancel_cut_by_sigkill_completes_after_a_restart(
    dsn: str, tmp_path: Path, kill: dict[str, object]
) -> None:
    marks_file = tmp_path / "marks.log"
    env = {kit.MARKS_ENV: str(marks_file)}
    if "after" in kill:
        env["CANCEL_KILL_AFTER"] = str(kill["after"])
    test = CrashTest(dsn, SCENARIO, workdir=tmp_path, timeout=90, env=env)
    crash_at = kill.get("crash_at")
    killed = test.run(crash_at=str(crash_at) if crash_at else None)
    assert killed.killed, killed.stderr
    # The cancel itself was kept, whole, before the kill: the run and every call under it.
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = %s", RUN)
    assert state == "rejected_canceled"
    assert [r.id for r in rows(dsn, RUN) if r.kind == "message" and r.state == "pending"] == []
    kept_at_kill = kept_cleanups(dsn)
    if crash_at:
        # The kill came at (or after: other threads keep theirs, and the store commits many
        # writes together) the n-th cleanup kept.
        assert int(str(crash_at).rsplit(":", 1)[1]) <= len(kept_at_kill) <= N

    test.env.pop("CANCEL_KILL_AFTER", None)
    finished = test.run()
    assert not finished.killed
    check_complete(dsn, marks_file, kept_at_kill)


@pytest.mark.parametrize(
    "crash_at",
    ["step.kept:40", "actor.ended:1", "actor.ended:50", "actor.ended:100"],
    ids=["40th-cleanup-kept", "first-worker-ended", "50th-worker-ended", "last-worker-ended"],
)
def test_canceling_an_actor_tree_cut_by_sigkill_completes_after_a_restart(
    dsn: str, tmp_path: Path, crash_at: str
) -> None:
    """``rt.cancel("fan")`` keeps the cancel (the run and every call under it) and the mark
    that the tree ends in one transaction, then ends 100 workers and their parent one by one;
    killed half-way, the next start's recovery ends the rest."""
    marks_file = tmp_path / "marks.log"
    test = CrashTest(
        dsn,
        "tests.cancel.scenarios:fan_actor",
        workdir=tmp_path,
        timeout=90,
        env={kit.MARKS_ENV: str(marks_file)},
    )
    killed = test.run(crash_at=crash_at)
    assert killed.killed, killed.stderr
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = %s", RUN)
    assert state == "rejected_canceled"
    [(reason,)] = sql(dsn, "SELECT reason FROM actors WHERE id = 'fan'")
    assert reason == {"ending": "shutdown"}
    ended_at_kill = N + 1 - len(tree_alive(dsn))
    if crash_at.startswith("actor.ended"):
        assert ended_at_kill == int(crash_at.rsplit(":", 1)[1])
    kept_at_kill = kept_cleanups(dsn)

    finished = test.run()
    assert not finished.killed, finished.stderr
    check_complete(dsn, marks_file, kept_at_kill, tree_ended=True)
