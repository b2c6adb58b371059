"""Connections to Postgres that come back after the database goes away.

``connect`` retries with capped, jittered exponential backoff until a deadline and then raises
``StoreUnavailableError``; ``is_disconnect`` tells a lost connection from an error in a
statement. Every connection the store makes loads ``jsonb`` as raw bytes, which msgspec then
decodes straight to the caller's type.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.adapt import Loader

from ..errors import StoreBusyError, StoreError, StoreUnavailableError

log = logging.getLogger("promissory.store")

STORE_FAULTS = (StoreUnavailableError, StoreBusyError)
"""The store's errors that say the database is away or busy, not that the work is wrong: the
runtime retries its own bookkeeping after them, and never counts them as an actor's crash."""


class _RawJsonLoader(Loader):
    # Leave JSON undecoded: msgspec decodes it later, to the type the caller names.
    def load(self, data: Any) -> bytes:
        return bytes(data)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a fresh connection the way every store connection is set up."""
    conn.adapters.register_loader("jsonb", _RawJsonLoader)
    conn.adapters.register_loader("json", _RawJsonLoader)
    conn._promissory = True  # type: ignore[attr-defined]  # whose it is, for log filters


def close_quietly(conn: psycopg.Connection[Any] | None, what: str) -> None:
    """Close ``conn``, which may be broken already; a failure to close it is only noted (at
    debug level): the connection is being given up either way.
    """
    if conn is None:
        return
    try:
        conn.close()
    except Exception as exc:
        log.debug("promissory: closing the connection of %s failed: %r", what, exc)


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """The pause before retry number ``attempt`` (0-based): exponential, capped, with jitter."""
    delay: float = min(cap, base * (2.0**attempt))
    return delay * (0.5 + random.random() / 2)


def connect(
    dsn: str,
    *,
    deadline: float,
    autocommit: bool = True,
    what: str = "the database",
    keepalives: bool = False,
) -> psycopg.Connection[Any]:
    """Connect to ``dsn``, retrying until the monotonic ``deadline``; with ``keepalives``, a
    connection that notices a cut network within a few seconds (TCP keepalives).

    Raises:
        StoreUnavailableError: no connection could be made before the deadline.
        StoreError: ``dsn`` is not a valid connection string.

    """
    attempt = 0
    while True:
        try:
            target = dsn
            if keepalives:  # the client notices a cut network in seconds, not minutes
                target = psycopg.conninfo.make_conninfo(
                    dsn, keepalives=1, keepalives_idle=1, keepalives_interval=1, keepalives_count=3
                )
            conn = psycopg.Connection.connect(
                target, autocommit=autocommit, connect_timeout=_connect_timeout(deadline)
            )
        except psycopg.ProgrammingError as exc:
            # The DSN does not parse: waiting will not mend it. The parser's message may
            # quote the DSN, password and all: its secrets are masked.
            raise StoreError(
                f"not a usable DSN for {what}: {scrub(_first_line(exc), dsn)}"
            ) from exc
        except psycopg.OperationalError as exc:
            if time.monotonic() >= deadline:
                raise StoreUnavailableError(
                    f"could not connect to {what} at {redact(dsn)}: {scrub(_first_line(exc), dsn)}"
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
    """Whether a statement error goes away if the transaction is simply run again: a conflict
    the database broke (deadlock, serialization) or a statement it stopped (statement or lock
    timeout, a cancel request).
    """
    return isinstance(
        exc,
        psycopg.errors.DeadlockDetected
        | psycopg.errors.SerializationFailure
        | psycopg.errors.LockNotAvailable
        | psycopg.errors.QueryCanceled,
    )


def is_xid_in_future(exc: BaseException) -> bool:
    """Whether ``txid_status`` refused a transaction id as "in the future": after a crash of
    the server, a transaction that never reached the WAL is forgotten with its id. It did not
    commit.
    """
    return isinstance(exc, psycopg.errors.InvalidParameterValue) and "in the future" in str(exc)


def check_dsn(dsn: str) -> str:
    """``dsn``, once libpq's parser accepts it.

    Raises:
        StoreError: it does not parse (the message never shows its password).

    """
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"not a usable DSN: {scrub(_first_line(exc), dsn)}") from None
    return dsn


_URI = re.compile(r"^(?P<scheme>postgres(?:ql)?://)(?P<rest>.*)$", re.S)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***``, in the form it was written in; fit for
    messages and logs, whether it parses or not.

    Example:
        >>> redact("postgresql://ann:s3cret@db/app")
        'postgresql://ann:***@db/app'

    """
    uri = _URI.match(dsn)
    if uri is None:
        return _KEYWORD_PASSWORD.sub(_masked, dsn)
    rest = uri.group("rest")
    netloc_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:***@{hosts}"
    tail = _QUERY_PASSWORD.sub(_masked, tail)
    return uri.group("scheme") + netloc + tail


def _masked(m: re.Match[str]) -> str:
    return m.group(1) + "***" if m.group(2) else m.group(0)


def secrets(dsn: str) -> list[str]:
    """The passwords written in ``dsn`` (as written, and percent-decoded), longest first."""
    found: list[str] = []
    uri = _URI.match(dsn)
    if uri is None:
        for m in _KEYWORD_PASSWORD.finditer(dsn):
            value = m.group(2)
            found += [value, value.strip("'")]
    else:
        rest = uri.group("rest")
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        userinfo, at, _ = netloc.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.partition(":")[2])
        found += [m.group(2) for m in _QUERY_PASSWORD.finditer(rest)]
    found += [unquote(f) for f in found]
    return sorted({f for f in found if f}, key=len, reverse=True)


def scrub(text: str, dsn: str | None) -> str:
    """``text`` with every password written in ``dsn`` replaced by ``***``."""
    for secret in secrets(dsn) if dsn else ():
        text = text.replace(secret, "***")
    return text


def _connect_timeout(deadline: float) -> int:
    return max(1, min(10, int(deadline - time.monotonic()) or 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
