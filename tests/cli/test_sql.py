"""``promissory sql``: read-only unless --write, every statement reported, values kept whole
(issue 14, items 4 and 6)."""

from __future__ import annotations

import json

import psycopg
import pytest

from promissory import Store

from .conftest import Cli
from .kit import one_clean_line, sql


@pytest.fixture
def victim(dsn: str) -> str:
    """A schema with promissory's tables and a table the tests try to harm."""
    with Store(dsn):
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE victim (n int)")
        conn.execute("INSERT INTO victim VALUES (1)")
    return dsn


def victim_rows(dsn: str) -> list[tuple[int]]:
    return sql(dsn, "SELECT n FROM victim")  # type: ignore[return-value]


def test_sql_is_read_only_by_default_and_runs_nothing_after_a_refused_statement(
    cli: Cli, victim: str
) -> None:
    done = cli("sql", "select 1 AS one; drop table victim; delete from victim")

    line = one_clean_line(done)
    assert line == (
        "promissory: statement 2 failed: cannot execute DROP TABLE in a read-only transaction "
        "(the query runs read-only; pass --write to change data)"
    )
    assert done.stdout.splitlines()[:3] == ["one", "---", "1"]  # what ran before is shown
    assert victim_rows(victim) == [(1,)]


@pytest.mark.parametrize(
    "escape",
    [
        "commit; drop table victim",
        "rollback; drop table victim",
        "commit; set transaction read write; drop table victim",
        "set transaction read write; drop table victim",
        "set session characteristics as transaction read write; drop table victim",
        "set default_transaction_read_only = off; drop table victim",
        "begin read write; drop table victim",
        "select set_config('transaction_read_only', 'off', false); drop table victim",
        "do $$ begin commit; drop table victim; end $$",
        "drop table victim; -- ; commit",
        "select 'x'';'; drop table victim",
    ],
)
def test_sql_cannot_leave_its_read_only_transaction(cli: Cli, victim: str, escape: str) -> None:
    done = cli("sql", escape)

    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert victim_rows(victim) == [(1,)]


def test_sql_write_runs_each_statement_and_reports_each_status(cli: Cli, victim: str) -> None:
    done = cli(
        "sql",
        "--write",
        "insert into victim values (2), (3); delete from victim where n = 1; "
        "select count(*) AS n from victim",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n\n") == ["INSERT 0 2", "DELETE 1", "n\n-\n2\n(1 row)\n"]
    assert sorted(victim_rows(victim)) == [(2,), (3,)]


def test_sql_json_prints_one_line_per_statement(cli: Cli, victim: str) -> None:
    done = cli("sql", "--json", "select n from victim; show search_path; select 1 where false")

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == [{"n": 1}]
    assert list(lines[1][0]) == ["search_path"]
    assert lines[2] == []


def test_sql_write_stops_at_the_first_failing_statement(cli: Cli, victim: str) -> None:
    done = cli("sql", "--write", "insert into victim values (2); select nope; delete from victim")

    assert one_clean_line(done).startswith("promissory: statement 2 failed: column")
    assert done.stdout.strip() == "INSERT 0 1"
    assert sorted(victim_rows(victim)) == [(1,), (2,)]


def test_sql_json_keeps_addresses_ranges_bytea_and_repeated_column_names(
    cli: Cli, victim: str
) -> None:
    query = (
        "SELECT '10.0.0.1'::inet AS a, int4range(1, 3) AS a, '\\x00ff'::bytea AS b, "
        "'{\"k\": 1}'::bytea AS c, '{\"k\": 1}'::jsonb AS d, interval '1 day' AS e"
    )

    done = cli("sql", query, "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {
            "a": "10.0.0.1",
            "a:2": "[1, 3)",
            "b": "\\x00ff",
            "c": "\\x7b226b223a20317d",
            "d": {"k": 1},
            "e": "P1D",
        }
    ]
    table = cli("sql", query)
    assert table.returncode == 0, table.stderr
    assert "\\x00ff" in table.stdout


def test_sql_on_a_fresh_schema_creates_the_schema_first(cli: Cli, dsn: str) -> None:
    assert sql(dsn, "SELECT to_regclass('promises')") == [(None,)]

    done = cli("sql", "SELECT count(*) AS n FROM promises")

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2] == "0"


def test_sql_with_a_quote_never_closed_is_one_clear_line(cli: Cli, victim: str) -> None:
    line = one_clean_line(cli("sql", "select 'oops"))

    assert line == "promissory: the query has a quoted string that is never closed"
