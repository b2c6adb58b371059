"""Fixtures shared by the whole suite: a real PostgreSQL, and a fresh schema per test.

The server is ``$PROMISSORY_TEST_DSN`` when it is set (CI points it at the machine's server),
and otherwise an embedded server in a temporary ``PROMISSORY_HOME``. Each test gets its own
schema, named in the DSN's search_path, so tests, their child processes and the CLI all see the
same tables and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.store import EmbeddedServer, Store


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DSN of the PostgreSQL server the suite runs against."""
    dsn = os.environ.get("PROMISSORY_TEST_DSN")
    if dsn:
        yield dsn
        return
    home = tmp_path_factory.mktemp("promissory-home")
    server = EmbeddedServer.at(Path(home) / "pgdata")
    try:
        yield server.dsn
    finally:
        # The embedded server outlives its process by design; a test run must not leave one
        # running per run in the temporary directory.
        server.stop()


def dsn_with_schema(server_dsn: str, schema: str) -> str:
    """``server_dsn`` with ``schema`` first on its search_path."""
    params = conninfo_to_dict(server_dsn)
    params["options"] = f"-c search_path={schema}"
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


@contextlib.contextmanager
def fresh_schema(server_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema, dropped afterwards."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield dsn_with_schema(server_dsn, schema)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def dsn(server_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema, dropped after the test."""
    with fresh_schema(server_dsn) as dsn:
        yield dsn


@pytest.fixture
def store(dsn: str) -> Iterator[Store]:
    """A store on a fresh schema."""
    s = Store(dsn, reconnect_timeout=20)
    try:
        yield s
    finally:
        s.close()
