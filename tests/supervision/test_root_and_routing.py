"""The runtime is one more ``plan_exit`` supervisor for actors with none above them (its backoff
honours ``reset_after``); a child's exit reaches its supervisor whether or not this node can
load the supervisor's class; a suspended gather keeps waiting on all after a restart."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from promissory.actors import (
    Backoff,
    ChildDef,
    ChildSpec,
    Context,
    DurableActor,
    Restart,
    Strategy,
    Supervisor,
    child,
    handler,
)
from promissory.runtime import Runtime
from tests.kit import count_calls
from tests.supervision.actors import Boom, Poison, Stop, Worker, sql, wait_until

FAILED_ONCE: set[str] = set()


class Flaky(DurableActor[None]):
    """Fails the first time it handles each message: the restart handles it again, and answers."""

    @handler
    def poison(self, ctx: Context, msg: Poison) -> str:
        if ctx.message_id not in FAILED_ONCE:
            FAILED_ONCE.add(ctx.message_id)
            raise Boom(msg.reason)
        return "handled"


def crash_and_read_delay(rt: Runtime, actor: str, caplog: pytest.LogCaptureFixture) -> float:
    """Crash ``actor`` once; the restart delay the root policy chose (it restarts and answers)."""
    caplog.clear()
    assert rt.ref(actor).ask(Poison()).get(10) == "handled"
    [delay] = re.findall(
        rf"restarting actor {actor} after abnormal exit \(in ([0-9.]+) s\)", caplog.text
    )
    return float(delay)


def test_the_root_policy_backs_off_and_starts_over_after_reset_after(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "promissory.runtime")
    backoff = Backoff(min=0.05, max=10.0, jitter=0.0, reset_after=1.0)
    spec = ChildSpec(restart=Restart.PERMANENT, intensity=10, period=60.0, backoff=backoff)
    with Runtime(dsn) as rt:
        rt.spawn(Flaky, id="flaky", spec=spec)
        delays = [crash_and_read_delay(rt, "flaky", caplog) for _ in range(3)]
        assert delays == pytest.approx([0.05, 0.1, 0.2])
        # It then ran longer than reset_after without failing: the next delay starts over.
        threading.Event().wait(1.3)
        assert crash_and_read_delay(rt, "flaky", caplog) == pytest.approx(0.05)


class Team(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w")]


def exits_sent_to(dsn: str, supervisor: str) -> int:
    query = "SELECT count(*) FROM promises WHERE recipient = %s AND id LIKE %s"
    return int(sql(dsn, query, supervisor, f"{supervisor}/exit/%")[0][0])


def test_the_root_policy_reads_the_clock_only_for_an_exit_that_restarts(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Runtime(dsn) as rt:
        assert rt.store is not None
        clock = rt.store.now
        planned: list[str] = []

        def now() -> float:
            if any(f.name == "_root_policy" for f in traceback.extract_stack()):
                planned.append("clock")
            return clock()

        monkeypatch.setattr(rt.store, "now", now)
        # A temporary actor's end and a transient one's normal end restart nothing: no read.
        for restart in (Restart.TEMPORARY, Restart.TRANSIENT):
            ref = rt.spawn(Worker, id=f"ends-{restart.value}", spec=ChildSpec(restart=restart))
            ref.ask(Stop()).get(10)
            wait_until(
                lambda ref=ref: (
                    sql(dsn, f"SELECT 1 FROM actors WHERE id = '{ref.id}' AND status = 'running'")
                    == []
                )
            )
        assert planned == []
        # A crash that restarts dates the restart by the database's clock.
        spec = ChildSpec(restart=Restart.PERMANENT, intensity=10, period=60.0)
        assert rt.spawn(Flaky, id="restarts", spec=spec).ask(Poison()).get(10) == "handled"
        assert planned == ["clock"]


def test_a_temporary_actors_end_reads_what_it_ends_once_and_looks_once_more(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an agent's run ends: one read of its row, children and cleanups routes the exit and
    # starts the end (four reads before), and the end looks once more for a child spawned
    # meanwhile. Counted by call, within the exit's handling.
    with Runtime(dsn) as rt:
        assert rt.store is not None
        calls = count_calls(
            monkeypatch,
            rt.store,
            ("actor_row", "ending_view", "subtree", "cleanup_pending", "now"),
            when=lambda *_, **__: any(f.name == "_handle_exit" for f in traceback.extract_stack()),
        )
        ref = rt.spawn(Worker, id="run", spec=ChildSpec(restart=Restart.TEMPORARY))
        ref.ask(Stop()).get(10)
        wait_until(lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'run'") == [("stopped",)])
    assert calls == {"ending_view": 1, "subtree": 1}


def test_an_exit_goes_to_a_supervisor_whose_class_this_node_cannot_load(dsn: str) -> None:
    with Runtime(dsn) as rt:
        rt.spawn(Team, id="team")
        wait_until(lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'team/w'"))
        assert sql(dsn, "SELECT supervisor FROM actors WHERE id = 'team'") == [(True,)]
    # This node cannot load the supervisor's class (another service hosts it).
    sql(dsn, "UPDATE actors SET kind = 'elsewhere.module:Team' WHERE id = 'team' RETURNING 1")
    with Runtime(dsn) as rt:
        with pytest.raises(Exception):  # noqa: B017 (pending: the supervisor cannot run here)
            rt.ref("team/w").ask(Poison()).get(1)
        # The exit is the supervisor's (its mailbox has it), not the root policy's.
        wait_until(lambda: exits_sent_to(dsn, "team") == 1)
        assert sql(dsn, "SELECT status FROM actors WHERE id = 'team/w'") == [("restarting",)]


def test_an_exit_whose_routing_cannot_be_told_is_kept_and_logged(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Runtime(dsn) as rt:
        rt.spawn(Team, id="team")
        wait_until(lambda: sql(dsn, "SELECT status FROM actors WHERE id = 'team/w'"))
    # A row from before the column, whose class this node cannot load.
    sql(
        dsn,
        "UPDATE actors SET kind = 'elsewhere.module:Team', supervisor = NULL "
        "WHERE id = 'team' RETURNING 1",
    )
    caplog.set_level(logging.ERROR, "promissory.runtime")
    with Runtime(dsn) as rt:
        reply = rt.ref("team/w").ask(Poison())
        wait_until(lambda: "cannot be told here" in caplog.text)
        # Not given up by the root policy, not restarted: kept as it was.
        assert sql(dsn, "SELECT status, restarts FROM actors WHERE id = 'team/w'") == [
            ("running", 0)
        ]
        assert not reply.done()


class Gather(msgspec.Struct):
    pass


REPLAYS: list[str] = []


class Gatherer(DurableActor[None]):
    @handler
    def gather(self, ctx: Context, msg: Gather) -> list[Any]:
        REPLAYS.append(ctx.message_id)
        a = ctx.promise(id="gather/a")
        b = ctx.promise(id="gather/b")
        return ctx.gather(a, b)


def test_a_suspended_gather_waits_on_all_after_a_restart(dsn: str) -> None:
    REPLAYS.clear()
    with Runtime(dsn) as rt:
        reply = rt.spawn(Gatherer, id="g").ask(Gather())
        wait_until(
            lambda: sql(dsn, "SELECT wait_all FROM promises WHERE id = %s", reply.id) == [(True,)]
        )
    with Runtime(dsn) as rt:
        assert rt.store is not None
        replays = len(REPLAYS)
        rt.store.resolve("gather/a", 1)
        threading.Event().wait(0.5)
        assert len(REPLAYS) == replays, "woken by the first of two it waits on"
        rt.store.resolve("gather/b", 2)
        assert rt.store.wait(reply.id, timeout=10).value_as(list) == [1, 2]
        assert len(REPLAYS) == replays + 1
