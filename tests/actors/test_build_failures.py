"""An actor that fails while it is built is a crash like any other: supervision decides, callers
get errors, a later open recovers, and an open that fails closes everything it opened."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import promissory.runtime._runtime as runtime_module
from promissory.actors import (
    ActorRef,
    ChildDef,
    Context,
    DurableActor,
    Strategy,
    Supervisor,
    child,
    handler,
)
from promissory.errors import PromissoryError
from promissory.runtime import Runtime
from promissory.store import Store
from tests.actors.kit import Item, one, sql
from tests.kit import eventually

BUILT: list[str] = []
FAIL = {"init": True, "start": True}


class BadConfig(Exception):
    pass


class InitFails(DurableActor[None]):
    def __init__(self) -> None:
        super().__init__()
        BUILT.append(self.id)
        if FAIL["init"]:
            raise BadConfig("no config for " + self.id)

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        return msg.n


class InitFailsEarly(DurableActor[None]):
    """Raises before the base class is set up, with a TypeError (once read as 'not hosted')."""

    def __init__(self) -> None:
        raise TypeError("missing a required argument")

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        return msg.n


class StartFails(DurableActor[None]):
    def on_start(self) -> None:
        BUILT.append(self.id)
        if FAIL["start"]:
            raise BadConfig("cannot connect for " + self.id)

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        return msg.n * 10


class StartFailsToo(StartFails):
    """A subclass whose on_start calls its base's: the base's failure stops the chain."""

    def on_start(self) -> None:
        super().on_start()
        BUILT.append("after-super:" + self.id)


class FirstStateFails(DurableActor[int]):
    """Its first state cannot be made (a class attribute where a method belongs)."""

    initial_state = 0  # type: ignore[assignment]

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        return msg.n


class FirstStateUnkept(DurableActor[Any]):
    """Its first state cannot be kept (not JSON)."""

    def initial_state(self) -> Any:
        return object()

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        return msg.n


class Go(msgspec.Struct):
    pass


class Eager(StartFails):
    """Sent ``Go`` at every (re)start, so each incarnation is built at once."""

    @classmethod
    def start_message(cls) -> Any:
        return Go()

    @handler
    def go(self, ctx: Context, msg: Go) -> None:
        pass


class Team(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Eager, id="w", restart="permanent")]


@pytest.fixture(autouse=True)
def _reset() -> None:
    BUILT.clear()
    FAIL.update(init=True, start=True)


def status(dsn: str, actor: str) -> tuple[str, int]:
    rows = sql(dsn, "SELECT status, restarts FROM actors WHERE id = %s", actor)
    return rows[0] if rows else ("missing", 0)  # type: ignore[return-value]


@pytest.mark.parametrize(
    "actor_class",
    [InitFails, InitFailsEarly, StartFails, StartFailsToo, FirstStateFails, FirstStateUnkept],
)
def test_an_actor_that_fails_while_built_is_supervised_and_its_callers_get_the_error(
    dsn: str, actor_class: type[DurableActor[Any]]
) -> None:
    with Runtime(dsn) as rt:
        # Neither spawn nor tell raises the constructor's exception: their rows committed.
        ref = rt.spawn(actor_class, id="a")
        reply = ref.ask(Item(1))
        with pytest.raises((BadConfig, TypeError, PromissoryError)):
            reply.get(timeout=15)
        # The root policy (transient, 1 restart in 5 s) restarted it once, then gave it up.
        assert eventually(lambda: status(dsn, "a")[0] == "failed")
        assert status(dsn, "a") == ("failed", 1)
        pending = "SELECT count(*) FROM promises WHERE recipient = 'a' AND state = 'pending'"
        assert one(dsn, pending) == 0
    assert "after-super:a" not in BUILT


def test_a_build_failure_at_recovery_does_not_fail_the_open(dsn: str) -> None:
    FAIL.update(start=False, init=False)
    with Runtime(dsn) as rt:
        assert rt.spawn(StartFails, id="a").ask(Item(1)).get(timeout=5) == 10
        assert rt.spawn(InitFails, id="b").ask(Item(1)).get(timeout=5) == 1
    # Messages kept while nothing runs; now neither actor can be built.
    with Store(dsn) as store:
        a = ActorRef("a", store).ask(Item(2))
        b = ActorRef("b", store).ask(Item(3))
    FAIL.update(start=True, init=True)
    with Runtime(dsn) as rt:  # opens: one actor's failure is that actor's
        assert rt.recovery is not None and rt.recovery.activated == 2
        for message in (a.id, b.id):
            error = rt.store.wait(message, timeout=15).error()
            assert error is not None and error.type.endswith("BadConfig")
    with Runtime(dsn):
        pass


def test_a_supervised_child_that_fails_on_start_is_restarted_then_escalated(dsn: str) -> None:
    with Runtime(dsn) as rt:
        rt.spawn(Team, id="team")
        assert eventually(lambda: status(dsn, "team")[0] == "failed", timeout=20)
        # Each team incarnation restarts w twice (its intensity) and then escalates; the root
        # restarts the team once (transient, 1 in 5 s) and gives it up the second time.
        assert BUILT.count("team/w") == 6
        assert status(dsn, "team") == ("failed", 1)


def probe_dsn(dsn: str) -> tuple[str, str]:
    name = "probe-" + uuid.uuid4().hex[:8]
    params = conninfo_to_dict(dsn)
    params["application_name"] = name
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None}), name


def test_an_open_that_fails_closes_every_connection_thread_and_lease_it_opened(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe, name = probe_dsn(dsn)
    threads = threading.active_count()

    def broken(*args: Any) -> Any:
        raise RuntimeError("recovery blew up")

    monkeypatch.setattr(runtime_module, "recover", broken)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="blew up"):
            Runtime(probe).open()
    monkeypatch.undo()

    def closed() -> bool:
        left = one(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)
        return left == 0 and threading.active_count() <= threads

    assert eventually(closed, timeout=10, what="every connection and thread closed")
    assert one(dsn, "SELECT count(*) FROM nodes WHERE ended_at IS NULL") == 0  # kept, ended
    with Runtime(dsn):  # and the next open is not held up by anything left behind
        pass
