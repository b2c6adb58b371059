"""Fixtures of the command-line tests: ``promissory`` in a subprocess on the test's schema."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from promissory.testing import fresh_schema

from .kit import child_env, json_out, promissory_args, run

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The children's ``$PROMISSORY_HOME``; no embedded server may have been started in it."""
    path = tmp_path / "home"
    yield path
    assert not (path / "pgdata").exists(), "a child process started the embedded server"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """The environment of ``promissory`` children: no ``$PROMISSORY_DSN`` (they get --dsn)."""
    return child_env(None, home)


@pytest.fixture
def cli(dsn: str, env: dict[str, str]) -> Cli:
    """``cli(*args, dsn=..., timeout=...)``: run ``python -m promissory --dsn DSN args…``."""

    def call(
        *args: str, dsn: str | None = dsn, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return run(promissory_args(dsn, *args), env, timeout)

    return call


@dataclass(frozen=True)
class FinishedDemo:
    """A schema holding one demo run that ran to its end without a crash."""

    dsn: str
    summary: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])


@pytest.fixture(scope="session")
def finished_demo(
    server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FinishedDemo]:
    """One uninterrupted ``promissory demo --json``, shared read-only by the tests."""
    home = tmp_path_factory.mktemp("demo-home")
    with fresh_schema(server_dsn) as dsn:
        done = run(promissory_args(dsn, "demo", "--json"), child_env(None, home), timeout=120)
        yield FinishedDemo(dsn, json_out(done))
