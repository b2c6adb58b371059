"""``promissory serve`` on the command line: it tells its URL once the schema is in place, and
refuses a non-loopback address without a token before touching any database."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.cli.kit import Procs, child_env, one_clean_line, promissory_args, run


def test_serve_tells_its_url_and_answers_there(dsn: str, procs: Procs) -> None:
    node = procs.start(promissory_args(dsn, "serve", "--port", "0"))
    url = node.wait_for_line(r"promissory serve: (http://127\.0\.0\.1:\d+)").group(1)
    assert httpx.get(url + "/ready", timeout=10).status_code == 200


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = child_env(None, tmp_path / "home")
    env.pop("PROMISSORY_SERVE_TOKEN", None)
    done = run(promissory_args(None, "serve", "--host", "0.0.0.0"), env)
    assert done.returncode == 2
    assert "without a token" in one_clean_line(done)
    assert not (tmp_path / "home" / "pgdata").exists()  # no embedded server was started


def test_serve_is_in_the_help() -> None:
    env = child_env(None, Path("/nonexistent"))
    done = run(promissory_args(None, "--help"), env)
    assert "serve" in done.stdout and "durable-promise protocol" in done.stdout


def test_serve_max_streams_answers_503_past_it(dsn: str, procs: Procs) -> None:
    node = procs.start(promissory_args(dsn, "serve", "--port", "0", "--max-streams", "1"))
    url = node.wait_for_line(r"promissory serve: (http://127\.0\.0\.1:\d+)").group(1)
    with httpx.stream("GET", f"{url}/poll/g/a", timeout=10) as first:
        assert first.status_code == 200
        assert httpx.get(f"{url}/poll/g/b", timeout=10).status_code == 503


def test_serve_refuses_a_max_streams_that_is_not_a_positive_number(tmp_path: Path) -> None:
    env = child_env(None, tmp_path / "home")
    done = run(promissory_args(None, "serve", "--max-streams", "0"), env)
    assert done.returncode == 2
    assert "--max-streams: must be between 1 and 1000000, not 0" in done.stderr
