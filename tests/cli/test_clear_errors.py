"""Every failure of the command is one clear line (JSON with --json), found before anything is
started or written (issue 14, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promissory import __version__

from .conftest import Cli
from .kit import child_env, one_clean_line, promissory_args, run, sql


def test_version_prints_the_version(cli: Cli) -> None:
    done = cli("--version", dsn=None)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"promissory {__version__}"


@pytest.mark.parametrize("args", [["dsn"], ["tree"], ["sql", "select 1"]])
def test_a_home_that_is_a_file_is_one_clear_line(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a directory")

    done = run(promissory_args(None, *args), child_env(None, home))

    line = one_clean_line(done)
    assert "cannot keep the embedded server's data in" in line
    assert "PROMISSORY_HOME" in line


def test_a_home_under_a_file_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")

    done = run(promissory_args(None, "dsn"), child_env(None, tmp_path / "a-file" / "home"))

    assert "Not a directory" in one_clean_line(done)


def test_dsn_refuses_a_dsn_that_does_not_parse(cli: Cli) -> None:
    line = one_clean_line(cli("dsn", dsn="not a dsn"))

    assert line.startswith("promissory: not a usable DSN: ")


@pytest.mark.parametrize(
    "target", ["bogus", "bogus:thing", "tests.cli.node_app:NOT_AN_ACTOR", "tests:nothing"]
)
def test_run_with_a_target_it_cannot_host_starts_no_embedded_server(
    env: dict[str, str], target: str
) -> None:
    # No DSN: the embedded server would be started to be found (the `home` fixture checks
    # that it was not).
    done = run(promissory_args(None, "run", target), env)

    one_clean_line(done)
    assert done.returncode == 2


def test_run_with_a_target_that_raises_is_one_clear_line(cli: Cli, dsn: str) -> None:
    done = cli("run", "json:loads")  # json.loads(rt): a TypeError

    line = one_clean_line(done)
    assert line.startswith("promissory: json:loads raised TypeError: ")
    assert done.returncode == 1
    assert sql(dsn, "SELECT count(*) FROM nodes WHERE ended_at IS NULL") == [(0,)]  # closed


def test_run_with_a_module_that_fails_to_import_is_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    done = cli("run", "tests.cli.broken_app:setup")

    line = one_clean_line(done)
    assert line.startswith("promissory: importing 'tests.cli.broken_app' failed: ")
    assert "ZeroDivisionError" in line


@pytest.mark.parametrize("args", [["promises", "--limit"], ["tree", "--limit"]])
@pytest.mark.parametrize("limit", ["99999999999999999999", "0", "ten"])
def test_a_limit_out_of_range_is_a_usage_error_not_a_database_error(
    cli: Cli, args: list[str], limit: str
) -> None:
    done = cli(*args, limit)

    line = one_clean_line(done)
    assert done.returncode == 2
    assert "argument --limit" in line
    assert "database" not in line


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["show", "no/such/thing"], 1),
        (["promises", "--limit", "0"], 2),
        (["frobnicate"], 2),
        (["sql", "select nope"], 1),
        (["resolve", "x", "--value", "{"], 2),
    ],
)
def test_with_json_an_error_is_one_json_object_on_stderr(
    cli: Cli, dsn: str, args: list[str], status: int
) -> None:
    done = cli(*args, "--json")

    assert done.returncode == status
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    error = json.loads(line)
    assert set(error) == {"error", "exit"}
    assert error["exit"] == status and error["error"]
