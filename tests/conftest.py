"""Fixtures shared by the whole suite: the ones promissory's own pytest plugin ships.

The project's tests are the plugin's first user (``promissory.testing.plugin``): the server is
its ``promissory_server_dsn`` (``$PROMISSORY_TEST_DSN`` when it is set, as CI sets it, and an
embedded server in a temporary directory otherwise) and each test's schema its
``promissory_dsn``, named in the DSN's search_path, so tests, their child processes and the
CLI all see the same tables and nothing else. The names the suite has always used
(``server_dsn``, ``dsn``) are those fixtures under shorter names; ``store`` is a store on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promissory.store import Store
from tests.cli.kit import Procs, child_env


@pytest.fixture(scope="session")
def server_dsn(promissory_server_dsn: str) -> str:
    """The DSN of the PostgreSQL server the suite runs against (the plugin's)."""
    return promissory_server_dsn


@pytest.fixture
def dsn(promissory_dsn: str) -> str:
    """A DSN whose search_path is a fresh, empty schema, dropped after the test (the plugin's)."""
    return promissory_dsn


@pytest.fixture
def store(dsn: str) -> Iterator[Store]:
    """A store on a fresh schema."""
    s = Store(dsn, reconnect_timeout=20)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of child processes: a home of their own, no ``$PROMISSORY_DSN``.

    Directories whose children need more (the DSN, a PYTHONPATH) override it.
    """
    return child_env(None, tmp_path / "home")


@pytest.fixture
def procs(dsn: str, env: dict[str, str]) -> Iterator[Procs]:
    """Long-running children (``promissory run``, ``ui``, ``serve``): killed at the end.

    It asks for ``dsn`` so that the children are stopped before the test's schema is dropped
    (a child still writing while ``DROP SCHEMA`` runs deadlocks the drop).
    """
    started = Procs(env)
    try:
        yield started
    finally:
        started.close()
