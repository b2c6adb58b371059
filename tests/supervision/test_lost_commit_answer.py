"""A restart whose decision's COMMIT answer is lost still runs the child again.

A one_for_one restart is written with the settle of the child's exit, in one transaction. When
the connection drops inside that COMMIT, the writer learns that it committed and reads the
ops back; the revive then matches nothing (its decision was applied), and the supervisor must
still activate the child's new incarnation, or its retried message waits forever.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from promissory import Context, DurableActor, Runtime, Supervisor, child, handler
from promissory._crashpoints import arm_drop
from tests.kit import eventually, sql

CRASHED: list[int] = []


class Work(msgspec.Struct, frozen=True):
    n: int


class OnceFlaky(DurableActor[None]):
    @handler
    def work(self, ctx: Context, msg: Work) -> int:
        if not CRASHED:
            CRASHED.append(msg.n)
            raise RuntimeError("fails once")
        return msg.n


class Keeper(Supervisor):
    def children(self) -> list[object]:
        return [child(OnceFlaky, id="w")]


@pytest.fixture
def drop_at_the_decision() -> Iterator[None]:
    CRASHED.clear()
    yield
    arm_drop(None)


def test_a_restart_whose_commit_answer_was_lost_still_runs_the_child(
    dsn: str, drop_at_the_decision: None, capfd: pytest.CaptureFixture[str]
) -> None:
    with Runtime(dsn) as rt:
        rt.spawn(Keeper, id="keeper")
        eventually(lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'keeper/w'"))
        arm_drop("complete+revive:1")  # the exit's settle with the child's revive
        assert rt.ref("keeper/w").ask(Work(7)).get(timeout=20) == 7
    assert "connection drop complete+revive #1" in capfd.readouterr().err  # it did drop
    assert CRASHED == [7]
    assert sql(dsn, "SELECT restarts FROM actors WHERE id = 'keeper/w'") == [(1,)]
