"""Running a person's SQL against the store: statement by statement, read-only unless asked.

``run_sql`` splits the text into statements the way psql does (outside quotes, dollar quotes
and comments) and sends each one alone through the extended protocol, which the server
refuses to run more than one statement through, so a split that disagrees with the server
fails instead of running more than was read. Read-only, every statement runs in one
``READ ONLY`` transaction that has already taken its snapshot (so it cannot be switched to
read-write), checked after each statement to be still open, and rolled back at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from ..errors import QueryError
from ._connection import connect

__all__ = ["StatementResult", "run_sql", "split_statements"]


class StatementResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one statement did.

    Attributes:
        statement: the statement's text, as it was sent.
        status: the server's command tag (``SELECT 2``, ``CREATE TABLE``, ``UPDATE 0``).
        rowcount: rows returned or changed (-1 when the server does not say).
        columns: the names of the columns returned, in order (duplicates kept), or ``None``
            for a statement that returns no rows.
        rows: the rows returned; ``json`` and ``jsonb`` values are ``msgspec.Raw`` JSON text,
            ``bytea`` values ``bytes``, other values as psycopg loads them.

    """

    statement: str
    status: str
    rowcount: int
    columns: list[str] | None = None
    rows: list[tuple[Any, ...]] = []


class _RawJson(Loader):
    # JSON stays JSON text, told apart from bytea (bytes) by its type.
    def load(self, data: Any) -> msgspec.Raw:
        return msgspec.Raw(bytes(data))


def run_sql(
    dsn: str, text: str, *, write: bool = False, connect_timeout: float = 5.0
) -> Iterator[StatementResult]:
    """Run each statement of ``text`` in order and yield what it did, as it is done.

    Read-only by default: the statements share one ``READ ONLY`` transaction, rolled back at
    the end, so nothing they do is kept. With ``write``, each statement runs on its own in
    autocommit, as psql runs a script.

    Example:
        >>> for r in run_sql(dsn, "SELECT id FROM promises LIMIT 1; SELECT 2"):  # doctest: +SKIP
        ...     print(r.status, r.rows)
        SELECT 1 [('agent/run/42',)]
        SELECT 1 [(2,)]

    Raises:
        QueryError: a statement failed (those before it ran), or one ended the read-only
            transaction (nothing after it ran). Nothing after a failure runs.
        StoreError: ``dsn`` is not a usable connection string.
        StoreUnavailableError: no database answered at ``dsn`` in ``connect_timeout`` seconds.

    """
    statements = split_statements(text)
    conn = connect(
        dsn, deadline=time.monotonic() + connect_timeout, autocommit=write, what="the database"
    )
    conn.adapters.register_loader("json", _RawJson)
    conn.adapters.register_loader("jsonb", _RawJson)
    try:
        cur = conn.cursor()
        if not write:
            conn.read_only = True
            # The snapshot taken here makes SET TRANSACTION READ WRITE fail from now on.
            cur.execute("SELECT 1")
        for n, statement in enumerate(statements, 1):
            if not write and conn.info.transaction_status is not TransactionStatus.INTRANS:
                raise QueryError(
                    f"statement {n - 1} ended the read-only transaction, so statement {n} and "
                    "those after it were not run (pass --write to run transaction control)",
                    n - 1,
                )
            try:
                cur.execute(statement.encode(), prepare=True)
            except psycopg.Error as exc:
                hint = ""
                if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
                    hint = " (the query runs read-only; pass --write to change data)"
                where = f"statement {n}" if len(statements) > 1 else "the query"
                raise QueryError(
                    f"{where} failed: {_first_line(exc)}{hint}", n, exc.sqlstate
                ) from None
            columns = [c.name for c in cur.description] if cur.description is not None else None
            yield StatementResult(
                statement=statement,
                status=cur.statusmessage or "OK",
                rowcount=cur.rowcount,
                columns=columns,
                rows=cur.fetchall() if columns is not None else [],
            )
    finally:
        try:
            if not write:
                conn.rollback()
        finally:
            conn.close()


# Dollar-quote tags are identifiers without a leading digit ($1 is a parameter, not a quote).
_TOKEN = re.compile(
    r"""
      (?P<semi>;)
    | (?P<dollar>(?<![A-Za-z0-9_$\x80-\uffff])\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$)
    | (?P<estring>(?<![A-Za-z0-9_$])[eE]')
    | (?P<squote>')
    | (?P<dquote>")
    | (?P<line>--)
    | (?P<block>/\*)
    """,
    re.VERBOSE,
)


def split_statements(text: str) -> list[str]:
    """The statements of ``text``: split at semicolons outside quotes and comments.

    Empty statements (only blanks, comments or semicolons) are left out.

    Raises:
        QueryError: a quote or comment is never closed.

    """
    statements: list[str] = []
    start = i = 0
    code = False  # whether the statement so far holds anything but blanks and comments
    n = len(text)
    while i < n:
        m = _TOKEN.search(text, i)
        if m is None:
            code = code or not text[i:].isspace()
            break
        kind = m.lastgroup
        code = code or not text[i : m.start()].isspace() and m.start() > i
        i = m.end()
        if kind == "semi":
            if code:
                statements.append(text[start : m.start()].strip())
            start, code = i, False
        elif kind == "line":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif kind == "block":  # block comments nest
            depth = 1
            while depth:
                opener, closer = text.find("/*", i), text.find("*/", i)
                _closed(closer, "a /* comment")
                if 0 <= opener < closer:
                    depth, i = depth + 1, opener + 2
                else:
                    depth, i = depth - 1, closer + 2
        else:
            code = True
            if kind == "dollar":
                end = text.find(m.group(), i)
                i = _closed(end, "a dollar-quoted string") + len(m.group())
            else:
                quote = '"' if kind == "dquote" else "'"
                i = _end_of_quote(text, i, quote, backslashes=kind == "estring")
    if code:
        statements.append(text[start:].strip())
    return statements


def _end_of_quote(text: str, i: int, quote: str, *, backslashes: bool) -> int:
    while True:
        end = text.find(quote, i)
        _closed(end, "a quoted string" if quote == "'" else "a quoted identifier")
        if backslashes and _escaped(text, end):
            i = end + 1
        elif text.startswith(quote * 2, end):  # a doubled quote stands for itself
            i = end + 2
        else:
            return end + 1


def _escaped(text: str, at: int) -> bool:
    count = 0
    while at - count - 1 >= 0 and text[at - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _closed(end: int, what: str) -> int:
    if end < 0:
        raise QueryError(f"the query has {what} that is never closed")
    return end


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
