"""The schema: migrations that run once however many start at once, and tables a person can read."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors, sql

from promissory.errors import SchemaTooNewError, StoreError
from promissory.store import SCHEMA_VERSION, PromiseState, Store

MIGRATION_VERSIONS = list(range(1, SCHEMA_VERSION + 1))


def versions(db: psycopg.Connection[Any]) -> list[tuple[int, int]]:
    return db.execute(
        "SELECT version, count(*)::int FROM promissory_migrations GROUP BY version ORDER BY 1"
    ).fetchall()


def tables(db: psycopg.Connection[Any]) -> set[str]:
    rows = db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchall()
    return {r[0] for r in rows}


def test_opening_the_store_twice_migrates_once_and_keeps_the_data(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    with Store(dsn) as first:
        assert first.version == SCHEMA_VERSION
        first.create("kept", param=1)

    with Store(dsn) as second:
        assert second.version == SCHEMA_VERSION
        assert second.get("kept").param_as(int) == 1

    assert versions(db) == [(v, 1) for v in MIGRATION_VERSIONS]
    assert {"promises", "actors", "nodes", "promissory_migrations"} <= tables(db)


@pytest.mark.timeout(60)
def test_threads_migrating_a_fresh_schema_at_once_all_succeed_once(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    n = 8
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def open_store(i: int) -> None:
        barrier.wait(10)
        try:
            with Store(dsn) as s:
                results[i] = s.version
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=open_store, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert results == [SCHEMA_VERSION] * n
    assert versions(db) == [(v, 1) for v in MIGRATION_VERSIONS]


@pytest.mark.timeout(60)
def test_processes_migrating_a_fresh_schema_at_once_all_succeed_once(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    code = (
        "import sys\n"
        "from promissory.store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    s.create('by/' + sys.argv[2])\n"
        "    print(s.version)\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, dsn, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [child.communicate(timeout=50) for child in children]

    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == str(SCHEMA_VERSION)
    assert versions(db) == [(v, 1) for v in MIGRATION_VERSIONS]
    assert db.execute("SELECT count(*) FROM promises").fetchone() == (4,)


@pytest.fixture
def future_schema(dsn: str, db: psycopg.Connection[Any]) -> int:
    """The test's schema, migrated, with some data, then marked as a newer version."""
    with Store(dsn) as s:
        s.create("old/pending")
        s.create("old/resolved")
        s.resolve("old/resolved", "v")
    newer = SCHEMA_VERSION + 1
    db.execute(
        "INSERT INTO promissory_migrations (version, name) VALUES (%s, 'from the future')",
        (newer,),
    )
    return newer


@pytest.mark.parametrize("migrate", [True, False], ids=["migrate", "check-only"])
def test_a_newer_schema_opens_read_only_and_refuses_writes_clearly(
    dsn: str, db: psycopg.Connection[Any], future_schema: int, migrate: bool
) -> None:
    with Store(dsn, migrate=migrate) as s:
        assert s.read_only

        writes: list[Callable[[], object]] = [
            lambda: s.create("new"),
            lambda: s.resolve("old/pending", 1),
            lambda: s.reject("old/pending", "e"),
            lambda: s.cancel("old/pending"),
            lambda: s.sweep_timeouts(),
        ]
        for write in writes:
            with pytest.raises(SchemaTooNewError) as info:
                write()
            message = str(info.value)
            assert f"version {future_schema}" in message
            assert f"newer than this promissory knows ({SCHEMA_VERSION})" in message
            assert "upgrade promissory" in message
            assert isinstance(info.value, StoreError)

        assert s.get("old/resolved").value_as(str) == "v"
        assert [p.id for p in s.search(prefix="old/").items] == ["old/pending", "old/resolved"]
        assert s.get("old/pending").state is PromiseState.PENDING

    assert db.execute("SELECT count(*) FROM promises").fetchone() == (2,)
    assert versions(db)[-1] == (future_schema, 1)


def test_a_foreign_promises_table_is_refused_with_a_clear_error(
    dsn: str, db: psycopg.Connection[Any]
) -> None:
    db.execute("CREATE TABLE promises (id integer PRIMARY KEY, what text)")
    db.execute("INSERT INTO promises VALUES (1, 'theirs')")

    with pytest.raises(StoreError, match="promissory did not create it") as info:
        Store(dsn, reconnect_timeout=5)

    assert "a table named promises already exists" in str(info.value)
    assert "search_path" in str(info.value)
    assert db.execute("SELECT * FROM promises").fetchall() == [(1, "theirs")]
    assert tables(db) == {"promises"}


def test_a_store_that_may_not_migrate_says_how_to_migrate(dsn: str) -> None:
    with pytest.raises(StoreError, match="run `promissory migrate`"):
        Store(dsn, migrate=False, reconnect_timeout=5)


def test_a_search_path_naming_no_existing_schema_is_a_clear_error(
    dsn_for: Callable[..., str],
) -> None:
    missing = dsn_for("no_such_schema_" + uuid.uuid4().hex[:8])

    with pytest.raises(StoreError, match="no schema to create promissory's tables in"):
        Store(missing, reconnect_timeout=5)


def test_promises_read_with_plain_sql_on_the_schemas_search_path(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    store.create("agent/run/42", param={"task": "compare"})
    store.create("agent/run/42/1")
    store.create("agent/run/42/2")
    store.create("agent/run/420")
    store.resolve("agent/run/42/1", {"plan": "x"})

    run = db.execute("SELECT id, state, param->>'task' FROM promises WHERE id = 'agent/run/42'")
    steps = db.execute(
        "SELECT id, state FROM promises WHERE id LIKE 'agent/run/42/%' ORDER BY created_at"
    )

    assert run.fetchall() == [("agent/run/42", "pending", "compare")]
    assert steps.fetchall() == [("agent/run/42/1", "resolved"), ("agent/run/42/2", "pending")]
    star = db.execute("SELECT * FROM promises WHERE id = %s", ("agent/run/42/1",)).fetchone()
    assert star is not None and star[0] == "agent/run/42/1"


def test_the_tables_live_in_the_connections_schema_only(
    store: Store, db: psycopg.Connection[Any]
) -> None:
    schema = db.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    assert store.schema == schema[0]
    placed = db.execute(
        "SELECT schemaname FROM pg_tables WHERE tablename = 'promises' AND schemaname = %s",
        (store.schema,),
    ).fetchall()
    assert placed == [(store.schema,)]


@pytest.mark.parametrize(
    ("statement", "column"),
    [
        ("UPDATE promises SET state = 'done' WHERE id = 'c'", "state"),
        ("UPDATE promises SET tags = '{\"a\": 1}' WHERE id = 'c'", "tags"),
        ('UPDATE promises SET tags = \'{"a": {"b": "c"}}\' WHERE id = \'c\'', "tags"),
        ("UPDATE promises SET tags = '[\"a\"]' WHERE id = 'c'", "tags"),
        ("UPDATE promises SET state = 'resolved' WHERE id = 'c'", "settled_at"),
        ("UPDATE promises SET settled_at = now() WHERE id = 'c'", "settled_at"),
        ("UPDATE promises SET kind = 'bogus' WHERE id = 'c'", "kind"),
        ("INSERT INTO promises (id, tags) VALUES ('d', '{\"n\": null}')", "tags"),
    ],
)
def test_check_constraints_refuse_rows_the_store_would_never_write(
    store: Store, db: psycopg.Connection[Any], statement: str, column: str
) -> None:
    store.create("c", tags={"ok": "yes"})

    with pytest.raises(pg_errors.CheckViolation) as refused:
        db.execute(statement.encode())

    # The one check (migration 11) names the rule a row broke, and the column.
    assert refused.value.diag.constraint_name == "promises_ok"
    assert refused.value.diag.column_name == column
    assert column in str(refused.value)

    assert store.get("c").state is PromiseState.PENDING
    assert store.get("c").tags == {"ok": "yes"}


@pytest.fixture
def odd_schema_dsn(server_dsn: str, dsn_for: Callable[..., str]) -> Iterator[str]:
    """A DSN on a schema whose name needs quoting and is too long for a plain channel name."""
    schema = "Odd-Schema " + "x" * 40 + uuid.uuid4().hex[:8]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    quoted = '"' + schema.replace(" ", "\\ ") + '"'
    try:
        yield dsn_for(quoted)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.timeout(60)
def test_a_schema_name_that_needs_quoting_works_end_to_end(odd_schema_dsn: str) -> None:
    with Store(odd_schema_dsn, reconnect_timeout=10) as s:
        assert s.schema.startswith("Odd-Schema ")
        assert len(s.channel.encode()) <= 63
        heard = threading.Event()
        s.subscribe("timer", [""], lambda kind, key, resync: heard.set())

        s.create("odd/1", timeout=3600)
        s.resolve("odd/1", 1)

        assert s.get("odd/1").state is PromiseState.RESOLVED
        assert heard.wait(10), "the NOTIFY trigger did not reach the listener"


def test_a_handed_message_fires_no_trigger_unless_its_node_is_not_the_holder(
    store: Store, dsn: str
) -> None:
    # A send that names its node as the one handing the message over (``handed``) sets
    # ``promissory.handed`` to the message's id only when that node holds the recipient, as
    # the statement read it; the trigger is then not fired for the message (migration 10). A
    # handed message with a timeout still announces its timer; a send naming a node that
    # does not hold the recipient, and a value in the earlier form (id, tab, node) that a node
    # not upgraded yet would set, are announced as before.
    from promissory.store._handling import send_op

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO actors (id, kind, spec, state, node, epoch) "
            "VALUES ('held', 'T', '{}', 'null', 'n1', 1)"
        )
    listening = psycopg.connect(dsn, autocommit=True)
    listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.channel)))

    def send(id: str, handed: str | None, secs: float | None = None) -> None:
        store.execute(send_op(id, "held", param="1", tags="{}", handed=handed, secs=secs))

    send("held/a", "n1")  # handed by its holder: no trigger
    send("held/b", "n1", secs=3600)  # handed, with a timeout: the timer alone
    send("held/c", "n2")  # n2 does not hold it: announced
    send("held/d", None)  # not handed: announced
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT set_config('promissory.handed', 'held/e' || chr(9) || 'n1', true)")
        conn.execute(
            "INSERT INTO promises (id, param, kind, recipient) "
            "VALUES ('held/e', '1', 'message', 'held')"
        )
    heard = []
    try:
        for note in listening.notifies(timeout=1.0, stop_after=20):
            heard.append(note.payload.split("\t")[0])
    finally:
        listening.close()
    # c, d and e are announced ('m' and the recipient), and b's timer ('t'); a is not.
    assert sorted(heard) == ["mheld", "mheld", "mheld", "t"]
    with psycopg.connect(dsn) as conn:
        seqs = dict(
            conn.execute("SELECT id, seq FROM promises WHERE recipient = 'held'").fetchall()
        )
    assert set(seqs) == {"held/a", "held/b", "held/c", "held/d", "held/e"}


def test_a_database_at_version_10_upgrades_with_its_rows_and_its_triggers_kept(
    dsn: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Migration 11 replaces the four CHECK constraints with one and the three triggers a
    # settle fired with one: a database written by an older promissory keeps its rows (each
    # passes the new check), and a cancel still cascades, a settle is still announced.
    from promissory.store import _schema

    monkeypatch.setattr(_schema, "MIGRATIONS", _schema.MIGRATIONS[:10])
    monkeypatch.setattr(_schema, "LATEST", 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _schema.migrate(conn) == 10
    db.execute(
        "INSERT INTO promises (id, tags, kind) VALUES "
        "('old/run', '{\"promissory:type\": \"Go\"}', 'message'), "
        "('old/run/1', '{}', 'step'), ('old/done', '{}', 'promise')"
    )
    db.execute(
        "UPDATE promises SET state = 'resolved', value = '1', settled_at = now() "
        "WHERE id = 'old/done'"
    )
    monkeypatch.undo()

    with Store(dsn) as store:
        assert store.version == SCHEMA_VERSION == 11
        assert store.get("old/done").value_as(int) == 1
        with psycopg.connect(dsn, autocommit=True) as listening:
            listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.channel)))
            store.cancel("old/run")
            heard = [n.payload for n in listening.notifies(timeout=2.0, stop_after=2)]
        assert store.get("old/run/1").state is PromiseState.REJECTED_CANCELED
        # Both settles announced, the cascade's first (it runs before the NOTIFY).
        assert heard == ["sold/run/1", "sold/run"]

    names = {
        r[0]
        for r in db.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'promises'::regclass "
            "AND contype = 'c'"
        ).fetchall()
    }
    assert names == {"promises_ok"}
    triggers = {
        r[0]
        for r in db.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'promises'::regclass "
            "AND NOT tgisinternal"
        ).fetchall()
    }
    assert triggers == {"promises_created", "promises_settled", "promises_mark_canceled"}
