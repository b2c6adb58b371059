"""Fixtures for the store's tests: raw SQL on the test's schema, and Python child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest

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
