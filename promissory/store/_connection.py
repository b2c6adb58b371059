"""Connections to Postgres that come back after the database goes away.

``connect`` retries with capped, jittered exponential backoff until a deadline and then raises
``StoreUnavailableError``; ``is_disconnect`` tells a lost connection from an error in a
statement. Every connection the store makes loads ``jsonb`` as raw bytes, which msgspec then
decodes straight to the caller's type.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
from psycopg.adapt import Loader

from ..errors import StoreError, StoreUnavailableError


class _RawJsonLoader(Loader):
    # Leave JSON undecoded: msgspec decodes it later, to the type the caller names.
    def load(self, data: Any) -> bytes:
        return bytes(data)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a fresh connection the way every store connection is set up."""
    conn.adapters.register_loader("jsonb", _RawJsonLoader)
    conn.adapters.register_loader("json", _RawJsonLoader)


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """The pause before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
    delay: float = min(cap, base * (2.0**attempt))
    return delay * (0.5 + random.random() / 2)


def connect(
    dsn: str, *, deadline: float, autocommit: bool = True, what: str = "the database"
) -> psycopg.Connection[Any]:
    """Connect to ``dsn``, retrying until the monotonic ``deadline``.

    Raises:
        StoreUnavailableError: no connection could be made before the deadline.
        StoreError: ``dsn`` is not a valid connection string.

    """
    attempt = 0
    while True:
        try:
            conn = psycopg.Connection.connect(
                dsn, autocommit=autocommit, connect_timeout=_connect_timeout(deadline)
            )
        except psycopg.ProgrammingError as exc:
            # The DSN does not parse: waiting will not mend it. The message names the fault
            # but not the DSN, which may hold a password.
            raise StoreError(f"not a usable DSN for {what}: {_first_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise StoreUnavailableError(
                    f"could not connect to {what} at {redact(dsn)}: {_first_line(exc)}"
                ) from exc
            time.sleep(min(backoff_delay(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1
            continue
        configure(conn)
        return conn


def is_disconnect(exc: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """Whether ``exc`` means the connection was lost (as opposed to a statement failing)."""
    if isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CrashShutdown):
        return True
    if isinstance(exc, psycopg.errors.CannotConnectNow):
        return True
    if conn is not None and (conn.broken or conn.closed):
        return True
    return isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None


def is_transient(exc: BaseException) -> bool:
    """Whether a statement error goes away if the transaction is simply run again."""
    return isinstance(
        exc,
        psycopg.errors.DeadlockDetected
        | psycopg.errors.SerializationFailure
        | psycopg.errors.LockNotAvailable,
    )


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``, fit for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in info:
        info["password"] = "***"
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in info.items() if v is not None})


def _connect_timeout(deadline: float) -> int:
    return max(1, min(10, int(deadline - time.monotonic()) or 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
