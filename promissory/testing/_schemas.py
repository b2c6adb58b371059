"""A schema of its own for each test: every process given its DSN sees its tables alone."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["dsn_with_schema", "fresh_schema"]


def dsn_with_schema(server_dsn: str, schema: str) -> str:
    """``server_dsn`` with ``schema`` first (and alone) on its search_path."""
    params = conninfo_to_dict(server_dsn)
    params["options"] = f"-c search_path={schema}"
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


@contextlib.contextmanager
def fresh_schema(server_dsn: str) -> Iterator[str]:
    """A DSN on a fresh, empty schema of the server ``server_dsn``, dropped afterwards.

    Every process given the DSN (a child, the CLI) sees the same tables and nothing else.

    Example:
        >>> with fresh_schema(server_dsn) as dsn:  # doctest: +SKIP
        ...     CrashSuite(dsn, scenarios.refund_flow).run()

    """
    schema = "pt_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield dsn_with_schema(server_dsn, schema)
    finally:
        drop_schema(server_dsn, schema)


def drop_schema(server_dsn: str, schema: str, *, attempts: int = 5) -> None:
    """Drop ``schema`` and everything in it.

    A process still writing in the schema (a child the test did not stop first) can deadlock
    the drop, which Postgres resolves by failing one side; the drop is tried again then, since
    the writer's transaction is gone by the time the next try runs.
    """
    statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    for attempt in range(attempts):
        try:
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                conn.execute(statement)
            return
        except psycopg.errors.DeadlockDetected:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
