"""Fixtures for the store's tests: raw SQL on the test's schema, and Python child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

RunPython = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit psycopg connection on the test's schema, for checking rows by SQL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def count_rows(db: psycopg.Connection[Any]) -> Callable[..., int]:
    """``count_rows(where="true", *params)``: how many promises rows match, by plain SQL."""

    def count(where: str = "true", *params: Any) -> int:
        row = db.execute(f"SELECT count(*) FROM promises WHERE {where}", params or None).fetchone()
        assert row is not None
        return int(row[0])

    return count


@pytest.fixture
def dsn_for(server_dsn: str) -> Callable[..., str]:
    """``dsn_for(schema=None, **params)``: the server's DSN on ``schema``, with libpq params."""

    def make(schema: str | None = None, **params: str) -> str:
        info = {k: v for k, v in conninfo_to_dict(server_dsn).items() if v is not None}
        if schema is not None:
            info["options"] = f"-c search_path={schema}"
        info.update(params)
        return make_conninfo(**info)

    return make


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Python child process: this one's, unbuffered, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@pytest.fixture
def run_python() -> RunPython:
    """Run Python source in a child process; returns the completed process (text mode)."""

    def run(
        code: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=child_env(env),
            timeout=timeout,
        )

    return run
