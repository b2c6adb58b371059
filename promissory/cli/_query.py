r"""``promissory sql``: each statement's rows as a table (or JSON), or its status.

Values are shown as a person reads them in psql: JSON as its text, ``bytea`` as ``\x`` hex,
anything else (addresses, ranges, intervals…) as its text. With ``--json`` each statement is
one line: its rows as objects (a repeated column name gets ``:2``, ``:3``… so none is lost), or
``{"status", "rowcount"}`` for a statement that returns no rows.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..store import StatementResult, run_sql
from ._table import json_line, printable, render


def run_and_print(
    dsn: str, query: str, *, write: bool, as_json: bool, connect_timeout: float
) -> None:
    """Run ``query`` statement by statement, printing what each did as it is done.

    Raises:
        QueryError: a statement failed or was refused; what ran before it is printed.

    """
    for n, result in enumerate(run_sql(dsn, query, write=write, connect_timeout=connect_timeout)):
        if as_json:
            print(json_line(statement_json(result)), flush=True)
            continue
        if n:
            print()
        if result.columns is None:
            print(printable(result.status), flush=True)
        else:
            rows = [[_text(v) for v in row] for row in result.rows]
            print(render(result.columns, rows), flush=True)


def statement_json(result: StatementResult) -> Any:
    """A statement's rows as a list of objects, or its status when it returns no rows."""
    if result.columns is None:
        return {"status": result.status, "rowcount": result.rowcount}
    keys = unique_names(result.columns)
    return [{k: _json(v) for k, v in zip(keys, row, strict=True)} for row in result.rows]


def unique_names(columns: list[str]) -> list[str]:
    """Column names made unique: a repeated name gets ``:2``, ``:3``… in order."""
    seen: dict[str, int] = {}
    taken = set(columns)
    names = []
    for name in columns:
        count = seen.get(name, 0) + 1
        seen[name] = count
        candidate = name if count == 1 else f"{name}:{count}"
        while count > 1 and candidate in taken:
            count += 1
            candidate = f"{name}:{count}"
        if count > 1:
            seen[name] = count
            taken.add(candidate)
        names.append(candidate)
    return names


def _json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return _hex(value)
    return value  # msgspec.Raw JSON goes in as it is; unknown types as text (json_line)


def _text(value: Any) -> Any:
    if isinstance(value, msgspec.Raw):
        return bytes(value).decode()
    if isinstance(value, bytes | bytearray | memoryview):
        return _hex(value)
    return value


def _hex(value: bytes | bytearray | memoryview) -> str:
    return "\\x" + bytes(value).hex()
