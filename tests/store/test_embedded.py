"""The embedded server: restarts under load, reuse, killed clients, PROMISSORY_HOME.

These tests run their own embedded server in a temporary directory, whatever
``PROMISSORY_TEST_DSN`` says: they are the suite's embedded-server path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.store import EmbeddedServer, Outcome, Store, home, resolve_dsn
from promissory.store._embedded import stop_embedded

from .conftest import RunPython, child_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """An embedded server of this module's own, stopped at the end."""
    srv = EmbeddedServer.at(tmp_path_factory.mktemp("embedded") / "pgdata")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def embedded_dsn(server: EmbeddedServer) -> str:
    """A DSN on a fresh schema of the module's embedded server."""
    schema = "e_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    info = {k: v for k, v in conninfo_to_dict(server.dsn).items() if v is not None}
    info["options"] = f"-c search_path={schema}"
    return make_conninfo(**info)


def postmaster_pid(server: EmbeddedServer) -> int:
    return int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_the_embedded_server_keeps_promises(embedded_dsn: str) -> None:
    with Store(embedded_dsn) as store:
        store.create("e/1", param={"x": 1})
        store.resolve("e/1", {"y": 2})
        assert store.get("e/1").value_as(dict) == {"y": 2}
    with psycopg.connect(embedded_dsn) as conn:
        row = conn.execute("SELECT state, value->>'y' FROM promises WHERE id = 'e/1'")
        assert row.fetchone() == ("resolved", "2")


class Progress:
    """A count of finished calls that a thread can wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.done = 0

    def tick(self) -> None:
        with self._cond:
            self.done += 1
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= n, timeout)


@pytest.mark.timeout(120)
def test_restarting_the_server_under_load_loses_and_doubles_nothing(
    server: EmbeddedServer, embedded_dsn: str
) -> None:
    workers, per_worker, restarts = 8, 40, 2
    total = workers * per_worker * 2
    progress = Progress()
    creates: dict[str, list[Outcome]] = {}
    settles: dict[str, list[Outcome]] = {}
    errors: list[BaseException] = []
    restarted: list[int] = []
    lock = threading.Lock()

    with Store(embedded_dsn, reconnect_timeout=60) as store:

        def work(worker: int) -> None:
            try:
                for j in range(per_worker):
                    id = f"load/{worker // 2}/{j}"  # two workers race on each id
                    created = store.create(id, param=j)
                    progress.tick()
                    settled = store.resolve(id, worker)
                    progress.tick()
                    with lock:
                        creates.setdefault(id, []).append(created)
                        settles.setdefault(id, []).append(settled)
            except BaseException as exc:
                errors.append(exc)

        def restart() -> None:
            for k in range(1, restarts + 1):
                if not progress.wait_for(total * k // (restarts + 1)):
                    return
                before = postmaster_pid(server)
                server.stop()
                server.start()
                restarted.append(before != postmaster_pid(server))

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        threads.append(threading.Thread(target=restart))
        for t in threads:
            t.start()
        for t in threads:
            t.join(110)

        assert errors == []
        assert restarted == [True] * restarts
        final = {p.id: p for p in store.search(prefix="load/", limit=10_000).items}

    ids = {f"load/{w // 2}/{j}" for w in range(workers) for j in range(per_worker)}
    assert set(final) == set(creates) == ids
    for id in ids:
        assert sum(o.applied for o in creates[id]) == 1, (id, creates[id])
        assert sum(o.applied for o in settles[id]) == 1, (id, settles[id])
        winner = next(o.promise for o in settles[id] if o.applied)
        assert final[id] == winner
        assert all(o.promise == winner for o in settles[id])
        assert final[id].param_as(int) == int(id.rsplit("/", 1)[1])


def test_a_second_embedded_server_on_the_same_dir_reuses_the_running_one(
    server: EmbeddedServer, embedded_dsn: str, run_python: RunPython
) -> None:
    pid = postmaster_pid(server)
    with Store(embedded_dsn) as store:
        store.create("shared/1", param="from the parent")

    assert EmbeddedServer.at(server.data_dir) is server
    child = run_python(
        "import sys\n"
        "from pathlib import Path\n"
        "from promissory.store import EmbeddedServer, Store\n"
        "srv = EmbeddedServer.at(Path(sys.argv[1]))\n"
        "print(srv.dsn)\n"
        "with Store(sys.argv[2]) as s:\n"
        "    print(s.get('shared/1').param_as(str))\n",
        str(server.data_dir),
        embedded_dsn,
    )

    assert child.returncode == 0, child.stderr
    dsn_line, param_line = child.stdout.splitlines()
    assert dsn_line == server.dsn
    assert param_line == "from the parent"
    assert postmaster_pid(server) == pid


CHILD_WRITER = """
import sys
from promissory.store import Store
store = Store(sys.argv[1])
for i in range(int(sys.argv[2])):
    id = f"child/{i}"
    store.create(id, param=i)
    store.resolve(id, {"i": i})
    print(id, flush=True)
print("done", flush=True)
sys.stdin.read()  # stay alive, connections open, until killed
"""


@pytest.mark.timeout(60)
def test_a_client_killed_with_sigkill_leaves_its_data_intact(
    server: EmbeddedServer, embedded_dsn: str
) -> None:
    pid = postmaster_pid(server)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_WRITER, embedded_dsn, "25"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None
    acknowledged = []
    for line in child.stdout:
        if line.strip() == "done":
            break
        acknowledged.append(line.strip())

    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)

    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) == 25
    assert postmaster_pid(server) == pid  # the server outlives its client
    server.stop()
    server.start()
    with psycopg.connect(embedded_dsn) as conn:
        rows = conn.execute(
            "SELECT id, state, (value->>'i')::int FROM promises ORDER BY seq"
        ).fetchall()
    assert rows == [(f"child/{i}", "resolved", i) for i in range(25)]


@pytest.mark.timeout(60)
def test_promissory_home_moves_the_embedded_data_dir(tmp_path: Path, run_python: RunPython) -> None:
    moved = tmp_path / "elsewhere"
    env = {"PROMISSORY_HOME": str(moved), "PROMISSORY_DSN": ""}

    child = run_python(
        "import psycopg\n"
        "from promissory.store import home, resolve_dsn\n"
        "print(home())\n"
        "dsn = resolve_dsn()\n"
        "print(dsn)\n"
        "with psycopg.connect(dsn) as conn:\n"
        "    print(conn.execute('SHOW data_directory').fetchone()[0])\n",
        env=env,
    )
    try:
        assert child.returncode == 0, child.stderr
        home_line, dsn_line, data_line = child.stdout.splitlines()
        assert Path(home_line) == moved
        assert Path(data_line).resolve() == (moved / "pgdata").resolve()
        assert (moved / "pgdata" / "PG_VERSION").exists()
        assert f"data in {(moved / 'pgdata').resolve()}" in child.stderr
    finally:
        if (moved / "pgdata" / "PG_VERSION").exists():
            EmbeddedServer.at(moved / "pgdata").stop()


def test_resolve_dsn_prefers_an_explicit_dsn_then_promissory_dsn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMISSORY_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("PROMISSORY_DSN", "postgresql://from-env/db")

    assert resolve_dsn("postgresql://given/db") == "postgresql://given/db"
    assert resolve_dsn() == "postgresql://from-env/db"
    assert home() == tmp_path / "unused"
    assert not (tmp_path / "unused").exists()  # no embedded server was started


def test_home_defaults_to_dot_promissory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMISSORY_HOME", raising=False)

    assert home() == Path.home() / ".promissory"


@pytest.mark.timeout(180)
def test_the_quickstart_path_demo_on_the_embedded_server_survives_killing_it(
    tmp_path: Path,
) -> None:
    """The Quickstart's path, with no database configured: ``promissory demo`` starts the
    embedded server (under ``$PROMISSORY_HOME``) and runs; ``promissory sql`` reads what it
    kept. The demo is killed half-way (SIGKILL of the process that started the server), then
    the server itself (SIGKILL of the postmaster); the next commands restart it, the demo
    resumes and finishes, and nothing kept is lost."""
    env = child_env({"PROMISSORY_HOME": str(tmp_path / "home"), "PROMISSORY_DSN": ""})
    env.pop("PROMISSORY_TEST_DSN", None)

    def promissory(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "promissory", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    data_dir = tmp_path / "home" / "pgdata"
    try:
        cut = promissory("demo", "--crash-after", "4")
        assert cut.returncode == -signal.SIGKILL, cut.stderr
        assert "embedded PostgreSQL, data in" in cut.stderr
        kept = promissory("sql", "SELECT count(*) FROM promises WHERE kind = 'step'", "--json")
        assert kept.returncode == 0, kept.stderr
        steps_at_kill = json.loads(kept.stdout)[0]["count"]
        assert steps_at_kill >= 4

        postmaster = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)  # the server dies too
        done = promissory("demo", "--json")
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["resumed_from"] >= 4
        assert summary["result"]
        after = promissory("sql", "SELECT count(*) FROM promises WHERE kind = 'step'", "--json")
        assert json.loads(after.stdout)[0]["count"] > steps_at_kill
    finally:
        EmbeddedServer.at(data_dir).stop()


@pytest.mark.timeout(180)
def test_the_embedded_server_leaves_the_directories_above_its_data_as_they_were_and_stop_stops_it(
    tmp_path: Path,
) -> None:
    """Run as root, pgserver opened every directory above the data to group and others (a
    ``drwx------`` home became ``drwxr-xr-x``): they keep their modes, but for the search bit
    for others the server's own user needs as long as it runs (without it, the server
    panicked at its first checkpoint); ``promissory stop`` stops the server that otherwise
    outlives every command."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    inner = private / "inner"
    inner.mkdir()
    inner.chmod(0o750)
    home_dir = inner / "home"
    data_dir = home_dir / "pgdata"
    above = [inner, *inner.parents]
    before = {d: d.stat().st_mode & 0o7777 for d in above}
    env = child_env({"PROMISSORY_HOME": str(home_dir), "PROMISSORY_DSN": ""})
    env.pop("PROMISSORY_TEST_DSN", None)

    def promissory(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "promissory", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    searchable = {d: mode | 0o011 for d, mode in before.items()}
    try:
        first = promissory("sql", "SELECT count(*) AS n FROM promises")  # starts it, migrates
        assert first.returncode == 0, first.stderr
        assert {d: d.stat().st_mode & 0o7777 for d in above} == searchable
        assert home_dir.stat().st_mode & 0o077 == 0o011, "the home it made: search only"
        again = promissory("promises")  # the running server, reached with the modes put back
        assert again.returncode == 0, again.stderr
        # A checkpoint reads the control file by its full path: the server lives through it.
        checkpoint = promissory("sql", "--write", "CHECKPOINT")
        assert checkpoint.returncode == 0, checkpoint.stderr
        assert promissory("promises").returncode == 0
        assert {d: d.stat().st_mode & 0o7777 for d in above} == searchable

        stopped = promissory("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == (
            f"stopped the embedded PostgreSQL in {data_dir} (its data stays)"
        )
        assert not (data_dir / "postmaster.pid").exists()
        assert {d: d.stat().st_mode & 0o7777 for d in above} == before
        none = promissory("stop", "--json")
        assert json.loads(none.stdout) == {"stopped": False, "data_dir": str(data_dir)}
        refused = promissory("stop", "--dsn", "postgresql://nobody@127.0.0.1:1/x")
        assert refused.returncode == 2
        assert "a DSN is set" in refused.stderr
    finally:
        stop_embedded(data_dir)
