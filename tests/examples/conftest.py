"""Fixtures of the example tests: each example in a subprocess on the test's schema."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.kit import ROOT, child_env, run

EXAMPLES = ROOT / "examples"

Example = Callable[..., Any]


def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / f"{name}.py"), *args]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """The children's ``$PROMISSORY_HOME``; no embedded server may have been started in it."""
    path = tmp_path / "home"
    yield path
    assert not (path / "pgdata").exists(), "an example started the embedded server"


@pytest.fixture
def env(dsn: str, home: Path) -> dict[str, str]:
    return child_env(dsn, home)


@pytest.fixture
def example(env: dict[str, str]) -> Example:
    """``example(name, *args)``: run ``python examples/NAME.py args…`` to its end."""

    def call(name: str, *args: str, timeout: float = 60) -> Any:
        return run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], env, timeout)

    return call
