"""Connection loss: every call completes once, nothing is doubled, and an outage is bounded."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.errors import StoreUnavailableError
from promissory.store import Outcome, Promise, PromiseKind, PromiseState, Store
from promissory.store._ops import Op
from promissory.store._promises import create_op, settle_op


def named(dsn: str, app: str) -> str:
    """``dsn`` with ``application_name=app``, so the test can find the store's connections."""
    info = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
    info["application_name"] = app
    return make_conninfo(**info)


def kill_backends(db: psycopg.Connection[Any], app: str) -> int:
    """Terminate every backend of ``app``; return how many there were."""
    rows = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = %s AND pid <> pg_backend_pid()",
        (app,),
    ).fetchall()
    return len(rows)


class Progress:
    """A count of finished calls that a thread can wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.done = 0
        self.stopped = False

    def tick(self) -> None:
        with self._cond:
            self.done += 1
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= n or self.stopped, timeout)


@pytest.mark.timeout(120)
def test_killing_every_connection_mid_workload_loses_and_doubles_nothing(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = "promissory-test-" + uuid.uuid4().hex[:8]
    workers, per_worker, kills = 8, 60, 5
    progress = Progress()
    creates: dict[str, list[Outcome]] = {}
    settles: dict[str, list[Outcome]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    with Store(named(dsn, app), reconnect_timeout=30) as store:
        # Two workers share each id, so every create and settle races another one.
        def work(worker: int) -> None:
            try:
                for j in range(per_worker):
                    id = f"load/{worker // 2}/{j}"
                    created = store.create(id, param={"j": j}, tags={"w": str(worker // 2)})
                    progress.tick()
                    if worker % 2:
                        settled = store.resolve(id, {"by": worker})
                    else:
                        settled = store.reject(id, f"by {worker}")
                    progress.tick()
                    with lock:
                        creates.setdefault(id, []).append(created)
                        settles.setdefault(id, []).append(settled)
            except BaseException as exc:
                errors.append(exc)

        def killer() -> None:
            total = workers * per_worker * 2
            for k in range(1, kills + 1):
                if not progress.wait_for(total * k // (kills + 2)):
                    return
                killed.append(kill_backends(db, app))

        killed: list[int] = []
        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        threads.append(threading.Thread(target=killer))
        for t in threads:
            t.start()
        for t in threads[:-1]:
            t.join(100)
        progress.stop()
        threads[-1].join(10)

        assert errors == []
        assert len(killed) == kills and all(n >= 1 for n in killed), killed
        final = {p.id: p for p in store.search(prefix="load/", limit=10_000).items}

    ids = {f"load/{w // 2}/{j}" for w in range(workers) for j in range(per_worker)}
    assert set(creates) == ids == set(final)
    row_count = db.execute("SELECT count(*) FROM promises").fetchone()
    assert row_count == (len(ids),)
    for id in ids:
        made = creates[id]
        assert len(made) == 2
        assert sum(o.applied for o in made) == 1, (id, made)
        winner = next(o.promise for o in made if o.applied)
        for o in made:
            assert o.promise.created_at == winner.created_at
            assert o.promise.param_as(dict) == {"j": int(id.rsplit("/", 1)[1])}
        settled = settles[id]
        assert sum(o.applied for o in settled) == 1, (id, settled)
        for o in settled:
            assert o.promise == final[id], (id, o, final[id])
        assert final[id].state in (PromiseState.RESOLVED, PromiseState.REJECTED)


@pytest.mark.timeout(60)
def test_a_waiter_still_wakes_after_its_listen_connection_was_killed(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    app = "promissory-test-" + uuid.uuid4().hex[:8]
    other_app = app + "-other"
    with (
        Store(named(dsn, app), reconnect_timeout=20) as store,
        Store(named(dsn, other_app), reconnect_timeout=20) as other,
    ):
        store.create("listen/1")
        woke: list[Promise] = []
        waiter = threading.Thread(target=lambda: woke.append(store.wait("listen/1", timeout=30)))
        waiter.start()
        deadline = time.monotonic() + 10
        while ("settled", "listen/1") not in store.events._subs:
            assert time.monotonic() < deadline
            threading.Event().wait(0.002)

        assert kill_backends(db, app) >= 1
        other.resolve("listen/1", "after the kill")  # another store: only NOTIFY can tell

        waiter.join(30)
        assert [p.value_as(str) for p in woke] == ["after the kill"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(30)
def test_an_unreachable_database_raises_store_unavailable_after_reconnect_timeout() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    start = time.monotonic()

    with pytest.raises(StoreUnavailableError, match="could not connect") as info:
        Store(dsn, reconnect_timeout=1)

    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 4, elapsed
    assert "127.0.0.1" in str(info.value)


@pytest.mark.timeout(30)
def test_the_password_is_not_shown_in_the_unavailable_error() -> None:
    dsn = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port()}/test"

    with pytest.raises(StoreUnavailableError) as info:
        Store(dsn, reconnect_timeout=0.2)

    assert "hunter2" not in str(info.value)


class FlakyProxy:
    """A proxy to PostgreSQL that can cut a connection just after the server has committed.

    The server's ``CommandComplete`` for a ``COMMIT`` is withheld and both sockets are closed:
    the transaction is durable, and the client cannot know it. That is the one moment a
    killed backend almost never hits, and the reason the writer reads a batch back. The proxy
    can also play an outage: every connection cut, new ones refused, until it ends.
    """

    def __init__(self, dsn: str) -> None:
        info = conninfo_to_dict(dsn)
        host = str(info.get("host") or "localhost")
        port = int(info.get("port") or 5432)
        if host.startswith("/"):
            self._target: Any = f"{host}/.s.PGSQL.{port}"
            self._family = socket.AF_UNIX
        else:
            self._target = (host, port)
            self._family = socket.AF_INET
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        proxied = {k: v for k, v in info.items() if v is not None and k != "hostaddr"}
        proxied.update(host="127.0.0.1", port=str(port), sslmode="disable", gssencmode="disable")
        self.dsn = make_conninfo(**proxied)
        self._lock = threading.Lock()
        self._skip = 0
        self._armed = False
        self._down = False
        self._open: set[socket.socket] = set()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def go_down(self) -> None:
        """Cut every connection and refuse new ones, as a database that went away."""
        with self._lock:
            self._down = True
            socks, self._open = list(self._open), set()
        self._close(*socks)

    def come_back(self) -> None:
        with self._lock:
            self._down = False

    def arm(self, skip: int = 0) -> None:
        """Cut the connection of the next COMMIT but ``skip``."""
        with self._lock:
            self._skip, self._armed = skip, True

    def close(self) -> None:
        self._listener.close()

    def _should_cut(self) -> bool:
        with self._lock:
            if not self._armed:
                return False
            if self._skip:
                self._skip -= 1
                return False
            self._armed = False
            self.cuts += 1
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                self._close(client)
                continue
            server = socket.socket(self._family, socket.SOCK_STREAM)
            server.connect(self._target)
            with self._lock:
                down = self._down
                if not down:
                    self._open.update((client, server))
            if down:  # the outage began while this one was being connected
                self._close(client, server)
                continue
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()
            threading.Thread(target=self._backward, args=(server, client), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _forward(self, client: socket.socket, server: socket.socket) -> None:
        try:
            # Nothing passes once the outage has begun, on any connection, even one whose
            # socket go_down has not closed yet: an outage is one moment, not a sweep.
            while (data := client.recv(65536)) and not self._down:
                server.sendall(data)
        except OSError:
            pass
        self._close(client, server)

    def _backward(self, server: socket.socket, client: socket.socket) -> None:
        # Server messages are a type byte and a 4-byte length that counts itself.
        buf = b""
        try:
            while (data := server.recv(65536)) and not self._down:
                buf += data
                out = b""
                while len(buf) >= 5 and len(buf) >= 1 + int.from_bytes(buf[1:5], "big"):
                    size = 1 + int.from_bytes(buf[1:5], "big")
                    msg, buf = buf[:size], buf[size:]
                    if msg[:1] == b"C" and msg[5:].startswith(b"COMMIT") and self._should_cut():
                        client.sendall(out)
                        self._close(client, server)
                        return
                    out += msg
                client.sendall(out)
        except OSError:
            pass
        self._close(client, server)


@pytest.fixture
def proxy(dsn: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(dsn)
    try:
        yield flaky
    finally:
        flaky.close()


BUSY_LOCK = 4_242_424_242


def blocked_op() -> Op:
    """An op that waits for the test's advisory lock, holding the writer meanwhile."""
    return Op([("SELECT pg_advisory_xact_lock(%s)", (BUSY_LOCK,))], lambda rows, xid: None)


def until_blocked(db: psycopg.Connection[Any]) -> None:
    """Return once a backend waits for ``BUSY_LOCK`` (the writer is inside its batch)."""
    deadline = time.monotonic() + 10
    while not db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
        (BUSY_LOCK & 0xFFFFFFFF,),
    ).fetchone() == (1,):
        assert time.monotonic() < deadline, "the writer never reached the lock"
        threading.Event().wait(0.005)


@pytest.mark.timeout(60)
def test_a_batch_whose_commit_answer_was_lost_reports_exactly_what_it_applied(
    proxy: FlakyProxy, db: psycopg.Connection[Any]
) -> None:
    with Store(proxy.dsn, reconnect_timeout=20) as store:
        store.create("pre/existing")
        store.create("pre/pending")
        store.create("pre/settled")
        store.resolve("pre/settled", "before")
        store.create("pre/then-settled")

        # Hold the writer inside a batch of its own while the ops below queue up behind it.
        db.execute("SELECT pg_advisory_lock(%s)", (BUSY_LOCK,))
        proxy.arm(skip=1)  # the busy batch's COMMIT passes; the next batch's is cut
        busy = store.submit(blocked_op())
        until_blocked(db)
        calls = {
            "create new/a #1": store.submit(create_op_for("new/a")),
            "create new/a #2": store.submit(create_op_for("new/a")),
            "create pre/existing": store.submit(create_op_for("pre/existing")),
            "resolve pre/pending": store.submit(settle_op_for("pre/pending", "now")),
            "resolve pre/settled": store.submit(settle_op_for("pre/settled", "again")),
            "create new/b": store.submit(create_op_for("new/b")),
            "resolve new/b": store.submit(settle_op_for("new/b", "b")),
            "create pre/then-settled": store.submit(create_op_for("pre/then-settled")),
            "resolve pre/then-settled": store.submit(settle_op_for("pre/then-settled", "t")),
        }
        db.execute("SELECT pg_advisory_unlock(%s)", (BUSY_LOCK,))
        busy.result(20)
        results = {name: f.result(20) for name, f in calls.items()}
        final = store.get_many(
            ["new/a", "new/b", "pre/existing", "pre/pending", "pre/settled", "pre/then-settled"]
        )

    assert proxy.cuts == 1
    applied = {name: outcome.applied for name, outcome in results.items()}
    assert applied["create new/a #1"] + applied["create new/a #2"] == 1
    assert applied["create pre/existing"] is False
    assert applied["resolve pre/pending"] is True
    assert applied["resolve pre/settled"] is False
    assert applied["create new/b"] is True
    assert applied["resolve new/b"] is True
    assert applied["create pre/then-settled"] is False
    assert applied["resolve pre/then-settled"] is True
    for name, outcome in results.items():
        if name.startswith("resolve"):
            assert outcome.promise == final[outcome.promise.id], name
    assert final["pre/settled"].value_as(str) == "before"
    assert db.execute("SELECT count(*) FROM promises").fetchone() == (6,)


def create_op_for(id: str) -> Op:
    return create_op(id, param=None, tags="{}", secs=None, at=None, kind=PromiseKind.PROMISE)


def settle_op_for(id: str, value: str) -> Op:
    return settle_op(id, PromiseState.RESOLVED, f'"{value}"')


@pytest.mark.timeout(60)
def test_an_outage_past_reconnect_timeout_fails_calls_clearly_then_the_store_recovers(
    proxy: FlakyProxy,
) -> None:
    with Store(proxy.dsn, reconnect_timeout=0.5) as store:
        store.create("before")
        store.subscribe("settled", [""], lambda kind, key, resync: None)  # a listener too

        proxy.go_down()
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.create("during")
        with pytest.raises(StoreUnavailableError):
            store.get("before")
        assert time.monotonic() - start < 5

        proxy.come_back()
        assert store.create("after").applied
        assert store.resolve("before", 1).applied
        assert store.get("before").state is PromiseState.RESOLVED
        assert store.find("during") is None


@pytest.mark.timeout(60)
def test_a_read_answers_as_soon_as_the_database_is_back_while_the_pool_still_reconnects(
    proxy: FlakyProxy,
) -> None:
    # The pool retries its lost connections with a backoff of a second or more; a read with a
    # shorter reconnect_timeout used to fail with PoolTimeout although the database was back.
    with Store(proxy.dsn, reconnect_timeout=0.3) as store:
        store.create("p/1")
        proxy.go_down()
        with pytest.raises(StoreUnavailableError):
            store.get("p/1")

        proxy.come_back()

        for _ in range(3):
            assert store.get("p/1").id == "p/1"


@pytest.mark.timeout(60)
def test_a_dropped_connection_is_told_in_one_line_not_one_per_pooled_connection(
    dsn: str, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    app = "promissory-test-" + uuid.uuid4().hex[:8]
    caplog.set_level("DEBUG", logger="psycopg")
    with Store(named(dsn, app), reconnect_timeout=20, pool_size=6) as store:
        store.create("q/1")
        barrier = threading.Barrier(6)

        def read_together(_: int) -> None:
            barrier.wait(5)  # six reads at once: six pooled connections
            store.read(lambda conn: conn.execute("SELECT pg_sleep(0.05)").fetchall())

        threads = [threading.Thread(target=read_together, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        caplog.clear()

        assert kill_backends(db, app) >= 6
        barrier.reset()
        threads = [threading.Thread(target=read_together, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert store.get("q/1").id == "q/1"

    warnings = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    text = [r.getMessage() for r in warnings]
    assert not any("discarding" in t or "error connecting" in t for t in text), text
    assert all(r.exc_info is None for r in warnings), text
    lost = [t for t in text if t.startswith("promissory store: ") and "retrying for up to" in t]
    back = [t for t in text if "the database answers again" in t]
    assert len(lost) == 1, text
    assert len(back) == 1, text


def test_a_subscriber_that_cannot_reach_the_store_is_one_warning_line(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(kind: str, key: str, resync: bool) -> None:
        raise StoreUnavailableError("the database went away")

    store.subscribe("settled", ["e/1"], unreachable)
    caplog.clear()

    with caplog.at_level("WARNING", logger="promissory"):
        store.publish([("settled", "e/1")])

    [record] = [r for r in caplog.records if r.name.startswith("promissory")]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert "StoreUnavailableError: the database went away" in record.getMessage()
