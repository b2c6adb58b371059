"""Text for people: values made safe for a terminal, and rows as a psql-style table.

Stored values come from models, tools and anyone who can write to the database, so every
string printed for a person passes through ``printable`` first: control characters (ESC, BEL,
C1 codes, bidirectional overrides…) are shown escaped, never sent to the terminal, where they
could move the cursor, rewrite the screen or set the clipboard (OSC 52).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

# C0 and C1 control characters, DEL, and the invisible characters that reorder or hide text
# (bidirectional marks, embeddings, overrides and isolates; line and paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Inside JSON strings the same characters, as JSON escapes (msgspec escapes C0 itself).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: str, *, newlines: bool = False) -> str:
    r"""``text`` with every control character escaped (``\x1b``, ``\u202e``).

    With ``newlines``, line breaks (and tabs) are kept as they are.

    Example:
        >>> printable("ok\x1b]52;c;ZXZpbA==\x07")
        'ok\\x1b]52;c;ZXZpbA==\\x07'

    """
    if newlines:
        return "\n".join(_CONTROL.sub(_keep_tabs, line) for line in text.split("\n"))
    return _CONTROL.sub(_escape, text)


def _keep_tabs(m: re.Match[str]) -> str:
    return "\t" if m.group() == "\t" else _escape(m)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON that is also safe to show in a terminal."""
    text = msgspec.json.encode(value, enc_hook=_json_fallback).decode()
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _json_fallback(value: Any) -> Any:
    # Anything msgspec does not know (IP addresses, ranges, intervals…) as its text.
    return str(value)


def cell(value: Any, width: int = 60) -> str:
    """One value as table text: bytes (JSON) decoded, None empty, long text cut short.

    Control characters are escaped.
    """
    if value is None:
        return ""
    if isinstance(value, msgspec.Raw):
        value = bytes(value)
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode(errors="replace")
    else:
        text = str(value)
    text = printable(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int = 60) -> str:
    """A psql-style table with a row count underneath."""
    heads = [printable(c) for c in columns]
    cells = [[cell(v, width) for v in row] for row in rows]
    widths = [len(c) for c in heads]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(heads, widths, strict=True)).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append(" | ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip())
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)
