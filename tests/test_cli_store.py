"""The ``promissory`` command's store subcommands, run as a user runs them: in a subprocess."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promissory.store import Store

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(dsn: str, tmp_path: Path) -> Cli:
    """``cli(*args, dsn=...)``: run ``python -m promissory --dsn DSN *args``."""
    env = dict(os.environ)
    env.pop("PROMISSORY_DSN", None)
    env["PROMISSORY_HOME"] = str(tmp_path / "home")  # never the user's embedded server

    def run(*args: str, dsn: str | None = dsn) -> subprocess.CompletedProcess[str]:
        prefix = ["--dsn", dsn] if dsn is not None else []
        return subprocess.run(
            [sys.executable, "-m", "promissory", *prefix, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    return run


@pytest.fixture
def db(dsn: str) -> Any:
    with Store(dsn):
        pass  # the schema exists before the command runs
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command printed to stderr; no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("promissory")
    return lines[0]


def test_dsn_prints_the_dsn_in_use(cli: Cli, dsn: str) -> None:
    plain = cli("dsn")
    as_json = cli("dsn", "--json")

    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == dsn
    assert json.loads(as_json.stdout) == {"dsn": dsn}


def test_the_dsn_option_may_follow_the_subcommand(cli: Cli, dsn: str) -> None:
    result = cli("dsn", "--dsn", dsn, dsn=None)

    assert result.stdout.strip() == dsn


def test_sql_prints_rows_as_a_table(cli: Cli, db: Any) -> None:
    db.execute(
        "INSERT INTO promises (id, value, state, settled_at) VALUES "
        "('t/1', '{\"n\": 1}', 'resolved', now()), ('t/2', NULL, 'pending', NULL)"
    )

    result = cli("sql", "SELECT id, state, value FROM promises ORDER BY id")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["id", "state", "value"]
    assert set(lines[1]) <= {"-", "+"}
    assert [c.strip() for c in lines[2].split("|")] == ["t/1", "resolved", '{"n": 1}']
    assert [c.strip() for c in lines[3].split("|")] == ["t/2", "pending", ""]
    assert lines[4] == "(2 rows)"


def test_sql_json_prints_rows_as_objects_with_json_values(cli: Cli, db: Any) -> None:
    db.execute(
        "INSERT INTO promises (id, param, tags) VALUES ('j/1', '{\"a\": [1, 2]}', '{\"k\": \"v\"}')"
    )

    result = cli("sql", "SELECT id, param, tags, attempt FROM promises", "--json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"id": "j/1", "param": {"a": [1, 2]}, "tags": {"k": "v"}, "attempt": 0}
    ]


def test_sql_without_rows_prints_the_status(cli: Cli, db: Any) -> None:
    result = cli("sql", "--write", "UPDATE promises SET tags = tags WHERE false")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "UPDATE 0"
    as_json = cli("sql", "--write", "UPDATE promises SET tags = tags WHERE false", "--json")
    assert json.loads(as_json.stdout) == {"status": "UPDATE 0", "rowcount": 0}


def test_a_failing_query_is_one_clear_line(cli: Cli, db: Any) -> None:
    line = one_clean_line(cli("sql", "SELECT * FROM no_such_table"))

    assert "the query failed" in line
    assert "no_such_table" in line


def test_resolve_settles_a_pending_promise_with_a_json_value(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("approval/7")

        result = cli("resolve", "approval/7", "--value", '{"approved": true, "by": "ada"}')

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "approval/7: resolved"
        p = store.get("approval/7")
    assert p.value_as(dict) == {"approved": True, "by": "ada"}


def test_resolve_json_reports_the_promise(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("approval/8", param={"ask": "ok?"})

    result = cli("resolve", "approval/8", "--value", "42", "--json")

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["applied"] is True
    assert out["promise"]["id"] == "approval/8"
    assert out["promise"]["state"] == "resolved"
    assert out["promise"]["value"] == 42
    assert out["promise"]["param"] == {"ask": "ok?"}


def test_resolve_without_a_value_stores_null(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("bare")
        assert cli("resolve", "bare").returncode == 0
        p = store.get("bare")
    assert p.state.value == "resolved"
    assert p.value is None


def test_reject_and_cancel_settle_with_the_given_text(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("r")
        store.create("c")

        rejected = cli("reject", "r", "--error", "not approved")
        canceled = cli("cancel", "c", "--reason", "nobody answered")

        assert (rejected.returncode, rejected.stdout.strip()) == (0, "r: rejected")
        assert (canceled.returncode, canceled.stdout.strip()) == (0, "c: canceled")
        r_error = store.get("r").error()
        c = store.get("c")
    assert r_error is not None and r_error.message == "not approved"
    assert c.state.value == "rejected_canceled"
    c_error = c.error()
    assert c_error is not None and c_error.message == "nobody answered"


@pytest.mark.parametrize("command", ["resolve", "reject", "cancel"])
def test_settling_an_unknown_id_is_one_clear_line(cli: Cli, db: Any, command: str) -> None:
    line = one_clean_line(cli(command, "no/such/promise"))

    # cancel also takes an actor id
    what = "promise or actor" if command == "cancel" else "promise"
    assert line == f"promissory: no {what} has the id 'no/such/promise'"


def test_settling_a_settled_promise_says_so_and_changes_nothing(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("done")
        store.resolve("done", "first")

        result = cli("resolve", "done", "--value", '"second"')
        canceled = cli("cancel", "done")

        assert result.returncode == 1
        assert result.stderr.strip() == "done: already resolved, left as it was"
        assert "Traceback" not in result.stderr
        assert canceled.returncode == 1
        assert store.get("done").value_as(str) == "first"


def test_an_invalid_json_value_is_one_clear_line_and_writes_nothing(cli: Cli, dsn: str) -> None:
    with Store(dsn) as store:
        store.create("pending")

        line = one_clean_line(cli("resolve", "pending", "--value", "{not json"))

        assert "--value is not valid JSON" in line
        assert store.get("pending").state.value == "pending"


def test_an_invalid_id_is_one_clear_line(cli: Cli, db: Any) -> None:
    line = one_clean_line(cli("resolve", "bad\nid"))

    assert "control characters" in line


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_database_is_one_clear_line(cli: Cli) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"

    line = one_clean_line(cli("sql", "select 1", dsn=dsn))

    assert line.startswith("promissory: could not connect to the promise store at ")
    assert "Connection refused" in line


@pytest.mark.parametrize("command", [["sql", "select 1"], ["resolve", "x"]])
def test_a_malformed_dsn_is_one_clear_line(cli: Cli, command: list[str]) -> None:
    line = one_clean_line(cli(*command, dsn="not a dsn"))

    assert "not a usable DSN" in line


def test_migrate_reports_the_schema_version(cli: Cli, dsn: str) -> None:
    from promissory.store import SCHEMA_VERSION

    result = cli("migrate", "--json")

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["version"] == SCHEMA_VERSION
    assert out["schema"].startswith("pt_")  # the pytest plugin's schema
