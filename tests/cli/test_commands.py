"""The command as a whole: ``--help`` everywhere, ``migrate``, and one clear line, never a
traceback, when no database answers at the DSN."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from .conftest import Cli, FinishedDemo
from .kit import Procs, child_env, one_clean_line, promissory_args, run, sql

SUBCOMMANDS = [
    "dsn",
    "sql",
    "migrate",
    "resolve",
    "reject",
    "cancel",
    "demo",
    "run",
    "resume",
    "tree",
    "show",
    "promises",
]


def test_help_lists_every_subcommand(cli: Cli) -> None:
    done = cli("--help", dsn=None)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: promissory ")
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in done.stdout, name


def test_no_subcommand_prints_the_usage_and_exits_2(cli: Cli) -> None:
    done = cli(dsn=None)

    assert done.returncode == 2
    assert done.stdout.startswith("usage: promissory ")


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_works_on_every_subcommand(cli: Cli, name: str) -> None:
    done = cli(name, "--help", dsn=None)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: promissory {name} ")
    assert "--dsn DSN" in done.stdout
    assert "--json" in done.stdout
    assert done.stderr == ""


def test_an_unknown_subcommand_is_a_usage_error(cli: Cli) -> None:
    done = cli("frobnicate", dsn=None)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "invalid choice: 'frobnicate'" in done.stderr


def test_migrate_creates_the_schema_and_says_its_version(cli: Cli, dsn: str) -> None:
    from promissory.store import SCHEMA_VERSION

    [(schema,)] = sql(dsn, "SELECT current_schema()")
    assert sql(dsn, "SELECT to_regclass('promises')") == [(None,)]

    first = cli("migrate")
    again = cli("migrate")

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"schema {schema!r} is at version {SCHEMA_VERSION}"
    assert again.stdout == first.stdout  # a second migrate changes nothing
    assert sql(dsn, "SELECT to_regclass('promises') IS NOT NULL") == [(True,)]
    [(version,)] = sql(dsn, "SELECT max(version) FROM promissory_migrations")
    assert version == SCHEMA_VERSION
    assert json.loads(cli("migrate", "--json").stdout) == {
        "schema": schema,
        "version": SCHEMA_VERSION,
    }


def test_the_dsn_may_come_from_the_environment(
    dsn: str, home: Path, finished_demo: FinishedDemo
) -> None:
    with_env = child_env(dsn, home)

    migrated = run(promissory_args(None, "migrate", "--json"), with_env)
    listed = run(promissory_args(None, "promises", "--json"), with_env)

    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["schema"] == sql(dsn, "SELECT current_schema()")[0][0]
    assert json.loads(listed.stdout) == []
    # --dsn wins over the environment.
    other = run(promissory_args(finished_demo.dsn, "promises", "--json"), with_env)
    assert len(json.loads(other.stdout)) > 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


UNREACHABLE_COMMANDS = [
    ["migrate"],
    ["resolve", "x", "--value", "1"],
    ["reject", "x"],
    ["cancel", "x"],
    ["tree"],
    ["tree", "x"],
    ["show", "x"],
    ["promises"],
    ["demo"],
    ["run", "tests.cli.node_app:setup"],
    ["resume", "x"],
]


def test_no_database_at_the_dsn_is_one_clear_line_for_every_command(procs: Procs) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{closed_port()}/nothing"
    # All at once: each command retries for a few seconds before it gives up.
    started = [(args, procs.start(promissory_args(dsn, *args))) for args in UNREACHABLE_COMMANDS]

    for args, proc in started:
        done = proc.result(90)
        line = one_clean_line(done)
        assert done.returncode == 1, (args, line)
        assert "Connection refused" in line, (args, line)
        assert proc.stdout == "", (args, proc.stdout)
