"""The writer's round trip on libpq's pipeline (``_pipeline.Pipeline``): rows, errors, prepared
statements (kept whatever psycopg does on the same connection, and prepared again when the
server loses them), big values, on a real server. Every test runs twice: with libpq's buffer
calls made with the GIL held (``_libpq``), and through psycopg's own methods."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from promissory.store import Store, _libpq
from promissory.store._pipeline import PREPARE_AFTER, Pipeline, StatementsLost
from promissory.store._writer import SPECULATIVE_IDLE

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True, params=["direct", "psycopg"])
def calls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the pipeline calls libpq: ``direct`` (found on this machine, Linux) or psycopg's."""
    if request.param == "direct":
        assert isinstance(_libpq.load(), _libpq.Direct), "libpq could not be found on Linux"
    else:
        monkeypatch.setattr(_libpq, "_loaded", [_libpq.Calls()])
    return str(request.param)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TEMP TABLE t (id text PRIMARY KEY, n bigint, v jsonb, b text)")
        yield c


def prepared(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()]


def test_rows_come_back_per_statement_in_one_transaction(conn: psycopg.Connection[Any]) -> None:
    p = Pipeline(conn)
    answers = p.run(
        [
            ("BEGIN", None),
            ("INSERT INTO t VALUES (%s, %s, %s::jsonb) RETURNING id, n", ("a", 1, '{"x": 1}')),
            ("INSERT INTO t VALUES (%(id)s, %(n)s, NULL)", {"id": "b", "n": 2}),
            ("SELECT v FROM t WHERE id = %s", ("a",)),
            ("COMMIT", None),
            ("SELECT txid_current()", None),
        ]
    )
    assert [a.rows() for a in answers[1:4]] == [[("a", 1)], [], [({"x": 1},)]]
    assert isinstance(answers[5].rows()[0][0], int)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_statement_run_again_is_prepared_once(conn: psycopg.Connection[Any]) -> None:
    p = Pipeline(conn)
    sql = "INSERT INTO t VALUES (%s, %s, NULL) RETURNING id"
    for i in range(PREPARE_AFTER + 3):
        (answer,) = p.run([(sql, (f"k{i}", i))])
        assert answer.rows() == [(f"k{i}",)]
    assert [s for s in prepared(conn) if "INSERT INTO t" in s] == [
        "INSERT INTO t VALUES ($1, $2, NULL) RETURNING id"
    ]
    # The same text with parameters of other types is another statement to the server.
    p.run([(sql, ("big", 2**40))])
    p.run([(sql, ("big2", 2**40))])
    assert conn.execute("SELECT n FROM t WHERE id = 'big2'").fetchone() == (2**40,)


def test_a_batchs_begin_commit_and_txid_are_prepared_too(conn: psycopg.Connection[Any]) -> None:
    # Every batch of the writer sends these three: unnamed, the server parses and plans
    # each every time.
    p = Pipeline(conn)
    sql = "INSERT INTO t VALUES (%s, %s, NULL)"
    for i in range(PREPARE_AFTER + 2):
        answers = p.run(
            [
                ("BEGIN", None),
                (sql, (f"k{i}", i)),
                ("COMMIT", None),
                ("SELECT txid_current()", None),
            ]
        )
        assert len(answers) == 4
        assert answers[3].count == 1
    assert sorted(s for s in prepared(conn) if "INSERT" not in s) == [
        "BEGIN",
        "COMMIT",
        "SELECT txid_current()",
    ]
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (PREPARE_AFTER + 2,)


def test_a_refused_statement_raises_its_own_error_and_keeps_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    p = Pipeline(conn)
    sql = "INSERT INTO t VALUES (%s, %s, NULL)"
    p.run([("BEGIN", None), (sql, ("a", 1)), ("COMMIT", None)])
    with pytest.raises(psycopg.errors.UniqueViolation):
        p.run([("BEGIN", None), (sql, ("z", 1)), (sql, ("a", 2)), ("COMMIT", None)])
    # The transaction is aborted, not committed: a rollback ends it and "z" is not there.
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t WHERE id = 'z'").fetchone() == (0,)
    # A statement prepared in the failed round trip stands (names are not transactional);
    # one the failure skipped is prepared again later without a clash.
    other = "UPDATE t SET n = %s WHERE id = %s"
    with pytest.raises(psycopg.errors.UniqueViolation):
        p.run([("BEGIN", None), (sql, ("a", 3)), (other, (1, "a")), ("COMMIT", None)])
    conn.execute("ROLLBACK")
    for _ in range(PREPARE_AFTER + 1):
        p.run([(other, (7, "a"))])
    assert conn.execute("SELECT n FROM t WHERE id = 'a'").fetchone() == (7,)


def test_a_syntax_error_is_the_databases_error(conn: psycopg.Connection[Any]) -> None:
    p = Pipeline(conn)
    for _ in range(PREPARE_AFTER + 1):  # also when it would be prepared
        with pytest.raises(psycopg.errors.SyntaxError):
            p.run([("SELEC %s", (1,))])
    assert p.run([("SELECT %s::int", (5,))])[0].rows() == [(5,)]


def test_values_bigger_than_the_sockets_buffers_go_both_ways(
    conn: psycopg.Connection[Any],
) -> None:
    big = "x" * (16 * 1024 * 1024)
    p = Pipeline(conn)
    answers = p.run(
        [
            ("INSERT INTO t VALUES ('big', 0, NULL, %s) RETURNING length(b)", (big,)),
            ("SELECT b FROM t WHERE id = 'big'", ()),
        ]
    )
    assert answers[0].rows() == [(len(big),)]
    assert answers[1].rows() == [(big,)]


def test_sent_is_called_after_everything_is_written(conn: psycopg.Connection[Any]) -> None:
    p = Pipeline(conn)
    seen: list[int] = []
    p.run([("INSERT INTO t VALUES ('s', 0, NULL)", None)], sent=lambda: seen.append(1))
    assert seen == [1]


def test_answers_up_to_a_flush_come_before_the_rest_is_done(
    conn: psycopg.Connection[Any],
) -> None:
    p = Pipeline(conn)
    insert = "INSERT INTO t VALUES (%s, 0, NULL) ON CONFLICT DO NOTHING RETURNING id"
    for i in range(PREPARE_AFTER + 1):  # prepared ones too: their prepares' answers set aside
        got: list[tuple[float, list[int]]] = []

        def flushed(results: list[Any], got: list[tuple[float, list[int]]] = got) -> None:
            got.append((time.monotonic(), [r.count for r in results]))

        answers = p.run(
            [
                ("BEGIN", None),
                (insert, (f"f{i}",)),
                (insert, (f"f{i}",)),  # the row is there: no row back
                ("SELECT pg_sleep(0.2)", None),
                ("COMMIT", None),
            ],
            flush_after=2,
            flushed=flushed,
        )
        done = time.monotonic()
        assert [counts for _, counts in got] == [[0, 1, 0]]
        assert done - got[0][0] >= 0.15  # given while the server was still working
        assert [a.count for a in answers] == [0, 1, 0, 1, 0]
    # Not given when a statement up to the flush failed: the round trip raises instead.
    seen: list[Any] = []
    with pytest.raises(psycopg.errors.UniqueViolation):
        p.run(
            [("BEGIN", None), ("INSERT INTO t VALUES ('f0', 0, NULL)", None), ("COMMIT", None)],
            flush_after=1,
            flushed=seen.append,
        )
    conn.execute("ROLLBACK")
    assert seen == []


def test_psycopgs_own_prepared_statements_never_cost_the_pipeline_its_own(
    conn: psycopg.Connection[Any],
) -> None:
    # psycopg prepares a statement run five times through it (the writer's re-reads), and
    # then sends DEALLOCATE ALL at the first ROLLBACK: the pipeline's statements went too,
    # and every later write of the writer failed ("prepared statement ... does not exist").
    p = Pipeline(conn)
    sql = "INSERT INTO t VALUES (%s, %s, NULL)"
    for i in range(PREPARE_AFTER + 1):
        p.run([(sql, (f"k{i}", i))])
    for _ in range(6):
        conn.execute("SELECT n FROM t WHERE id = %s", ("k0",)).fetchall()
    conn.execute("BEGIN")
    conn.execute("ROLLBACK")
    assert "INSERT INTO t VALUES ($1, $2, NULL)" in prepared(conn)
    p.run([(sql, ("after", 1))])


def test_statements_the_server_lost_are_prepared_again(conn: psycopg.Connection[Any]) -> None:
    # Lost by a DISCARD ALL or DEALLOCATE ALL someone else sent: the round trip that finds
    # one missing keeps nothing and says so, and the same statements run again succeed.
    p = Pipeline(conn)
    sql = "INSERT INTO t VALUES (%s, %s, NULL)"
    for i in range(PREPARE_AFTER + 1):
        p.run([(sql, (f"k{i}", i))])
    conn.execute("DEALLOCATE ALL")
    with pytest.raises(StatementsLost):
        p.run([("BEGIN", None), (sql, ("lost", 1)), ("COMMIT", None)])
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t WHERE id = 'lost'").fetchone() == (0,)
    p.run([("BEGIN", None), (sql, ("lost", 1)), ("COMMIT", None)])
    assert conn.execute("SELECT count(*) FROM t WHERE id = 'lost'").fetchone() == (1,)


def test_a_writer_that_re_read_and_then_idled_still_writes(store: Store) -> None:
    # What broke a chaos-test node for good: the writer re-reads an op's row through psycopg
    # (an idempotent repeat finds it there), psycopg prepares that read on its fifth time,
    # and the first ROLLBACK of an idle writer's open transaction then went with DEALLOCATE
    # ALL. From then on every write failed, and a message was never answered.
    for _ in range(PREPARE_AFTER + 1):
        store.create("first")
    for _ in range(6):
        assert not store.create("first").applied  # read back each time
    time.sleep(SPECULATIVE_IDLE * 3)  # idle: the transaction opened ahead is rolled back
    for i in range(PREPARE_AFTER + 1):
        assert store.create(f"after-{i}").applied
    assert store.resolve("after-0", 1).applied


def test_binary_and_text_parameters_go_whole(conn: psycopg.Connection[Any], calls: str) -> None:
    # bytes go in binary format (their length counts, NULs and all), the rest as text.
    p = Pipeline(conn)
    blob = b"\x00a\x00" * 5000
    for _ in range(PREPARE_AFTER + 1):  # unnamed, then prepared
        (answer,) = p.run(
            [
                (
                    "SELECT %s::bytea, %s::text, %s::bigint, %s::jsonb, %s::text",
                    (blob, "é" * 3, -(2**40), '{"a": [1, null]}', None),
                )
            ]
        )
        assert answer.rows() == [(blob, "ééé", -(2**40), {"a": [1, None]}, None)]
    assert isinstance(p._calls, _libpq.Direct) == (calls == "direct")


def test_the_direct_calls_are_libpqs_own(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_libpq, "_loaded", [])  # found afresh: the one libpq psycopg loaded
    direct = _libpq.load()
    assert isinstance(direct, _libpq.Direct)
    assert direct.busy(conn.pgconn)() == 0
    conn.close()
    with pytest.raises(psycopg.OperationalError, match="closed"):
        direct.busy(conn.pgconn)


def test_notifications_are_read_whole_and_in_order(
    conn: psycopg.Connection[Any], dsn: str, calls: str
) -> None:
    # The store's listener takes what libpq has read this way (with the GIL held, with
    # ``Direct``): every payload, its bytes as sent, in the order sent.
    conn.execute("LISTEN promissory_test_channel")
    sent = ["s" + "é" * 3, "", "m" + "x" * 7000, "t"]
    with psycopg.connect(dsn, autocommit=True) as other:
        with other.transaction():
            for payload in sent:
                other.execute("SELECT pg_notify('promissory_test_channel', %s)", (payload,))
    take = _libpq.load()
    assert isinstance(take, _libpq.Direct) == (calls == "direct")
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
        conn.pgconn.consume_input()
        got += take.notifies(conn.pgconn)
    assert got == [p.encode() for p in sent]
    assert take.notifies(conn.pgconn) == []
