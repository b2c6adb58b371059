"""Saying, once, that the database went away, and once that it is back.

A lost connection is met by every thread that uses the database at once and by each retry;
logging each of those meetings buries the one fact in noise. An ``OutageLog`` turns them into
one warning when a part of the runtime first fails to reach the database and one line when it
reaches it again; the failures in between go to the debug level. psycopg_pool's own warnings
about the store's pool (one per discarded connection, one per reconnection attempt) are
dropped for the same reason: ``Store.read`` reports the outage itself; so is psycopg's note
that a pipeline on one of the store's connections could not be ended because the connection
was lost (the writer retries the batch).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

__all__ = ["OutageLog", "quiet_pool_warnings"]

POOL_PREFIX = "promissory"
"""The name of every pool the store makes starts with this."""


class OutageLog:
    """One line when ``what`` loses the database, one when it has it again.

    Example:
        >>> outage = OutageLog(logging.getLogger("promissory.store"), "store reads")
        >>> outage.failed(ConnectionError("server closed the connection"))  # warns once
        >>> outage.ok()  # says it is back, once

    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._lock = threading.Lock()
        self._since: float | None = None
        self._back: float | None = None
        """When the database was last found back (``ok`` ended an outage)."""

    @property
    def down(self) -> bool:
        """Whether the last attempt failed."""
        return self._since is not None

    def failed(
        self, exc: BaseException, then: str = "retrying", began: float | None = None
    ) -> None:
        """An attempt failed with ``exc`` (a lost or unreachable database); ``began``
        (``time.monotonic()``) is when it started.

        An attempt that started before the database was last found back does not begin a new
        outage: it ran on a connection the last outage had cut (a pooled one, handed out late),
        and says nothing about the database now.
        """
        with self._lock:
            stale = began is not None and self._back is not None and began < self._back
            first = self._since is None and not stale
            if first:
                self._since = time.monotonic()
        level = logging.WARNING if first else logging.DEBUG
        self._log.log(level, "promissory %s: %s; %s", self._what, describe(exc), then)

    def ok(self, began: float | None = None) -> None:
        """An attempt succeeded; ``began`` (``time.monotonic()``) is when it started.

        An attempt that started before the outage was noticed does not end it: it ran on a
        connection the outage had not reached yet (a read finishing while the others fail),
        and the database may be as far away as ever.
        """
        if self._since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self._since is None or (began is not None and began < self._since):
                return
            since, self._since = self._since, None
            self._back = time.monotonic()
        if since is not None:
            self._log.warning(
                "promissory %s: the database answers again (after %.1f s)",
                self._what,
                time.monotonic() - since,
            )


def describe(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _OwnRecords(logging.Filter):
    # Drops psycopg's and psycopg_pool's warnings about promissory's own pools and lost
    # connections (a pool's name, a connection's pool or mark says whose it is); records about
    # a user's own pools and connections are left alone.
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        args: Any = record.args
        for arg in args if isinstance(args, tuple) else ():
            if isinstance(arg, str) and arg.startswith(POOL_PREFIX):
                return False
            pool = getattr(arg, "_pool", None)
            if str(getattr(pool, "name", "")).startswith(POOL_PREFIX):
                return False
            conn: Any = getattr(arg, "_conn", arg)  # a pipeline's connection, or the connection
            if getattr(conn, "_promissory", False) and (conn.broken or conn.closed):
                return False
        return True


_installed = False
_install_lock = threading.Lock()


def quiet_pool_warnings() -> None:
    """Drop psycopg_pool's warnings about promissory's own pools (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            for name in ("psycopg.pool", "psycopg"):
                logging.getLogger(name).addFilter(_OwnRecords())
            _installed = True
