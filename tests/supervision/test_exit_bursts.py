"""A burst of exits: a supervisor whose children crash at once reads their rows with the
first exit, in one query, and decides each exit as it would have with a read of its own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from promissory.actors import (
    ChildDef,
    Context,
    Strategy,
    Supervisor,
    child,
    handler,
)
from promissory.actors._children import TerminateChild
from promissory.runtime import Runtime
from tests.supervision.actors import Crash, Ping, Pong, Worker, gate, sql, start, wait_until

CHILDREN = 12


class Wait(msgspec.Struct):
    gate: str


class Gated(Supervisor):
    """One-for-one over ``CHILDREN`` workers, which can be held on a gate (so its children's
    exits wait in its mailbox)."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 100, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id=f"c{i}") for i in range(CHILDREN)]

    @handler
    def wait(self, ctx: Context, msg: Wait) -> None:
        gate(msg.gate).wait(20)


def _count_reads(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the store read the rows of exited children, and single actor rows."""
    assert rt.store is not None
    store, calls = rt.store, {"exited": 0, "row": 0}

    def counted(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(store, "exited_children", counted("exited", store.exited_children))
    monkeypatch.setattr(store, "actor_row", counted("row", store.actor_row))
    return calls


def _pending_exits(dsn: str) -> int:
    rows = sql(
        dsn,
        "SELECT count(*) FROM promises WHERE recipient = 'sup' AND state = 'pending' "
        "AND tags->>'promissory:type' = 'ChildExit'",
    )
    return int(rows[0][0])


def test_a_burst_of_exits_reads_its_children_once_and_restarts_each_once(
    rt: Runtime, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(rt, Gated)
    rt.ref("sup").tell(Wait("held"))
    crashes = [rt.ref(f"sup/c{i}").ask(Crash(times=1)) for i in range(CHILDREN)]
    wait_until(lambda: _pending_exits(dsn) == CHILDREN, what="every exit waiting")
    calls = _count_reads(rt, monkeypatch)

    gate("held").set()

    assert [r.get(20) for r in crashes] == ["survived"] * CHILDREN
    restarts = sql(dsn, "SELECT id, restarts FROM actors WHERE parent = 'sup' ORDER BY id")
    assert {r[1] for r in restarts} == {1}, restarts
    # The first exit read the rows of the other eleven with its own.
    assert calls == {"exited": 1, "row": 0}


def test_a_message_handled_between_exits_makes_the_next_exit_read_again(
    rt: Runtime, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Exits of c0..c3, then an order to terminate c5, then c6's exit. The rows read with
    # c0's exit stop at the order; c6's exit, handled after it (another handler ran in
    # between), reads its child again.
    start(rt, Gated)
    rt.ref("sup").tell(Wait("held"))
    first = [rt.ref(f"sup/c{i}").ask(Crash(times=1)) for i in range(4)]
    wait_until(lambda: _pending_exits(dsn) == 4, what="four exits waiting")
    rt.ref("sup").tell(TerminateChild("c5"))
    rt.ref("sup/c6").ask(Crash(times=1))
    wait_until(lambda: _pending_exits(dsn) == 5, what="five exits waiting")
    calls = _count_reads(rt, monkeypatch)

    gate("held").set()

    assert [r.get(20) for r in first] == ["survived"] * 4
    wait_until(
        lambda: sql(dsn, "SELECT restarts FROM actors WHERE id = 'sup/c6'")[0][0] == 1,
        what="c6 restarted",
    )
    rows = dict(sql(dsn, "SELECT id, status FROM actors WHERE parent = 'sup'"))
    assert rows["sup/c5"] == "stopped"
    assert calls["exited"] == 2  # c0's (reading c1..c3 with it) and c6's


def test_a_restarted_child_runs_at_its_revives_epoch_with_no_claim_of_its_own(
    rt: Runtime, dsn: str
) -> None:
    # The revive written with the exit's settle makes the next incarnation on this node (a
    # new epoch): the activation starts from that row, with no claim (no write) of its own.
    start(rt, Gated)
    before = rt.ref("sup/c0").ask(Ping()).get(10, type=Pong)
    assert rt.ref("sup/c0").ask(Crash(times=1)).get(20) == "survived"

    after = rt.ref("sup/c0").ask(Ping()).get(10, type=Pong)
    row = sql(dsn, "SELECT epoch, restarts FROM actors WHERE id = 'sup/c0'")[0]
    # One epoch for the exit's record, one for the revive: the one the activation runs at.
    assert row == (before.epoch + 2, 1)
    assert after.epoch == before.epoch + 2
