"""A lost LISTEN connection is a reason to look again, never a signal: a running handler is not
canceled by the resync, and messages sent while the listener was away are handled after it."""

from __future__ import annotations

import logging
import threading
import uuid

import msgspec
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.actors import ActorRef, Context, DurableActor, handler
from promissory.runtime import Runtime
from promissory.store import EventKind, Store
from tests.actors.kit import sql
from tests.kit import eventually

GATE = threading.Event()
RAN: list[str] = []


class Job(msgspec.Struct):
    n: int


class Patient(DurableActor[None]):
    @handler
    def job(self, ctx: Context, msg: Job) -> int:
        RAN.append(ctx.message_id)
        if msg.n == 1:
            GATE.wait(10)
        return ctx.step(lambda n: n * 10, msg.n, name="times-ten")


def named(dsn: str) -> tuple[str, str]:
    name = "resync-" + uuid.uuid4().hex[:8]
    params = conninfo_to_dict(dsn)
    params["application_name"] = name
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None}), name


def kill_listeners(dsn: str, name: str) -> int:
    """Cut this test's LISTEN connections (not another test's, on the same server)."""
    rows = sql(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE query ILIKE 'LISTEN %%' AND application_name = %s",
        name,
    )
    return len(rows)


def test_a_listener_reconnect_neither_cancels_a_handler_nor_loses_a_message(dsn: str) -> None:
    GATE.clear()
    RAN.clear()
    node_dsn, name = named(dsn)
    with Runtime(node_dsn) as rt:
        ref = rt.spawn(Patient, id="patient")
        first = ref.ask(Job(1))
        eventually(lambda: RAN, what="the handler runs")
        assert kill_listeners(dsn, name) >= 1
        # Sent by another process while this node's listener is down (nothing pokes it).
        with Store(dsn) as other:
            second = ActorRef("patient", other).ask(Job(2))
        GATE.set()
        assert first.get(timeout=15) == 10, "the handler was not canceled by the resync"
        assert rt.store is not None
        assert rt.store.wait(second.id, timeout=15).value_as(int) == 20
    assert sql(dsn, "SELECT state FROM promises WHERE id = %s", first.id) == [("resolved",)]


def test_a_lost_listen_connection_is_told_once_and_its_return_once(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    store_dsn, name = named(dsn)
    resynced = threading.Event()
    caplog.set_level(logging.INFO, logger="promissory.store")
    with Store(store_dsn) as store:
        store.subscribe(EventKind.SETTLED, ["x"], lambda kind, key, resync: resynced.set())
        for _ in range(2):  # twice: each outage is told, and each return
            resynced.clear()
            eventually(lambda: kill_listeners(dsn, name), what="the listener's connection")
            assert resynced.wait(10), "the subscriber was asked to look again"

    told = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("promissory listener:")
    ]
    assert len(told) == 4, told
    assert "reconnecting" in told[0] and "reconnecting" in told[2], told
    assert "answers again" in told[1] and "answers again" in told[3], told
