"""A database fault is not an application crash: statement and lock timeouts, and a transaction
the server forgot in an immediate restart, are retried by the runtime; they never consume an
actor's restart intensity and never strand a message."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.actors import ChildSpec, Context, DurableActor, Restart, handler
from promissory.runtime import Runtime
from promissory.store import EmbeddedServer, Store
from promissory.store._writer import Writer
from tests.actors.kit import sql
from tests.kit import eventually

CRASHED: set[str] = set()


class Job(msgspec.Struct):
    n: int
    crash: bool = False


class Worker(DurableActor[None]):
    @handler
    def job(self, ctx: Context, msg: Job) -> int:
        if msg.crash and ctx.message_id not in CRASHED:
            CRASHED.add(ctx.message_id)
            raise RuntimeError("a real crash, once")
        return ctx.step(lambda n: n * 2, msg.n, name="double")


def with_options(dsn: str, options: str) -> str:
    params = conninfo_to_dict(dsn)
    params["options"] = f"{params.get('options', '')} {options}".strip()
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


class RowLock:
    """Holds a row of ``actors`` locked as an UPDATE would (senders still pass), until released."""

    def __init__(self, dsn: str, actor: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.conn.execute("SELECT 1 FROM actors WHERE id = %s FOR NO KEY UPDATE", (actor,))

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def restarts(dsn: str, actor: str) -> int:
    return int(sql(dsn, "SELECT restarts FROM actors WHERE id = %s", actor)[0][0])


def test_a_lock_timeout_while_claiming_is_retried_not_a_crash(dsn: str) -> None:
    # Every statement of the node gives up after 100 ms waiting for a lock, and the store
    # retries a failed statement for 1 s before it gives up.
    node = with_options(dsn, "-c lock_timeout=100")
    with Runtime(node, reconnect_timeout=1.0, idle_timeout=0.05) as rt:
        ref = rt.spawn(Worker, id="w", spec=ChildSpec(restart=Restart.TRANSIENT))
        assert ref.ask(Job(1)).get(timeout=10) == 2
        eventually(lambda: rt.host.live_activations() == 0, what="passivated")  # a new claim
        lock = RowLock(dsn, "w")
        try:
            reply = ref.ask(Job(2))
            time.sleep(2.5)  # the claim times out, is retried, the store gives up; it waits
            assert not reply.done()
        finally:
            lock.release()
        assert reply.get(timeout=15) == 4
    assert restarts(dsn, "w") == 0
    assert sql(dsn, "SELECT status FROM actors WHERE id = 'w'") == [("running",)]


def test_a_lock_timeout_while_handling_an_exit_is_retried_and_counts_one_restart(
    dsn: str,
) -> None:
    CRASHED.clear()
    node = with_options(dsn, "-c lock_timeout=100")
    with Runtime(node, reconnect_timeout=1.0) as rt:
        ref = rt.spawn(Worker, id="w", spec=ChildSpec(restart=Restart.TRANSIENT, intensity=1))
        assert ref.ask(Job(1)).get(timeout=10) == 2
        lock = RowLock(dsn, "w")
        try:
            reply = ref.ask(Job(3, crash=True))
            eventually(lambda: CRASHED, what="the crash")
            time.sleep(2.5)  # the exit's writes time out, again and again
        finally:
            lock.release()
        # One crash, one restart: the database's trouble spent none of the intensity (1).
        assert reply.get(timeout=15) == 6
    assert restarts(dsn, "w") == 1


def test_a_transaction_id_in_the_future_reads_as_not_committed(dsn: str) -> None:
    writer = Writer(dsn, reconnect_timeout=5, on_events=lambda events: None)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT txid_current()").fetchone()
        assert row is not None
        assert writer._committed(int(row[0]) + 10_000_000, time.monotonic() + 5) is False
    finally:
        writer.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer.at(tmp_path / "pgdata")
    try:
        yield srv
    finally:
        srv.stop()


def immediate_stop(server: EmbeddedServer) -> None:
    """What ``pg_ctl -m immediate stop`` does: SIGQUIT to the postmaster (no checkpoint, no
    clean shutdown of the backends; the next start runs crash recovery)."""
    pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGQUIT)
    eventually(lambda: not psutil.pid_exists(pid), what="the postmaster gone")


@pytest.mark.timeout(180)
def test_an_immediate_restart_of_the_server_crashes_no_actor_and_loses_no_message(
    server: EmbeddedServer,
) -> None:
    dsn = server.dsn
    errors: list[BaseException] = []
    with Runtime(dsn, reconnect_timeout=30) as rt:
        refs = [rt.spawn(Worker, id=f"w{i}", spec=ChildSpec(intensity=0)) for i in range(4)]
        replies: list[Any] = []
        stop = threading.Event()

        def send() -> None:
            n = 0
            while not stop.is_set():
                try:
                    replies.append((n, refs[n % 4].ask(Job(n))))
                except Exception as exc:  # the send itself may fail while the server is down
                    errors.append(exc)
                n += 1
                time.sleep(0.01)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.0)
        immediate_stop(server)
        time.sleep(1.0)
        server.start()  # as pgserver starts it (its socket directory, its options)
        time.sleep(1.0)
        stop.set()
        sender.join()
        for n, reply in replies:
            assert reply.get(timeout=60) == 2 * n
        with Store(dsn) as store:
            rows = store.read(lambda c: c.execute("SELECT status, restarts FROM actors").fetchall())
    assert rows == [("running", 0)] * 4, "no actor crashed, none was restarted"
