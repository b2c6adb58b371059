"""Rows as a plain-text table, the way psql prints them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


def cell(value: Any, width: int = 60) -> str:
    """One value as table text: bytes (JSON) decoded, None empty, long text cut short."""
    if value is None:
        return ""
    if isinstance(value, msgspec.Raw):
        value = bytes(value)
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode(errors="replace")
    else:
        text = str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int = 60) -> str:
    """A psql-style table with a row count underneath."""
    cells = [[cell(v, width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append(" | ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip())
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
