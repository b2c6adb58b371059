"""Safe HTML by construction: every value is escaped unless it is ``Markup`` made here.

Pages are built from literal templates in this package's code and values read from the
store. ``html(template, *values)`` escapes each value (stored model and tool outputs are
untrusted: ``<script>`` in a model's answer is shown as text), and returns ``Markup``, which
later templates take as it is. There is no other way to make ``Markup`` from a value.

Example:
    >>> html("<td>{}</td>", "<script>alert(1)</script>")
    Markup('<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>')

"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;"})
"""What ``html.escape(text, quote=True)`` replaces, as one ``str.translate`` table."""


class Markup(str):
    """HTML that is safe to send as it is (made by ``html`` or ``join`` only)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Markup({str.__repr__(self)})"


def escape(value: Any) -> Markup:
    """``value`` as text in HTML: ``Markup`` as it is, anything else escaped (quotes too).

    Example:
        >>> escape('a "b" <c>')
        Markup('a &quot;b&quot; &lt;c&gt;')

    """
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(str(value).translate(_ESCAPES))


def html(template: str, *values: Any, **named: Any) -> Markup:
    """Fill ``template`` (``str.format`` fields) with ``values``, each escaped.

    Example:
        >>> html('<a href="{}">{}</a>', "/run/a&b", "<b>")
        Markup('<a href="/run/a&amp;b">&lt;b&gt;</a>')

    """
    return Markup(
        template.format(*(escape(v) for v in values), **{k: escape(v) for k, v in named.items()})
    )


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Join ``parts`` (each escaped unless ``Markup``) with the literal ``sep``.

    Example:
        >>> join(["<a>", html("<b>{}</b>", 1)])
        Markup('&lt;a&gt;<b>1</b>')

    """
    return Markup(sep.join(escape(p) for p in parts))


def path_part(id: str) -> str:
    """An id as a URL path (its ``/`` kept, everything else that must be, quoted).

    Example:
        >>> path_part("agent/run/42?x")
        'agent/run/42%3Fx'

    """
    return quote(id, safe="/")


def url(path: str, **query: Any) -> str:
    """A URL within the view: ``path`` and its query (values left out when ``None``/empty).

    Example:
        >>> url("/search", prefix="a b", state=None)
        '/search?prefix=a+b'

    """
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(q) if q else "")


def pretty_json(raw: bytes | str | None, limit: int = 20_000) -> str:
    """Raw JSON indented for reading (cut at ``limit`` characters), or ``""`` for none."""
    if raw is None:
        return ""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        text = msgspec.json.format(data, indent=2).decode()
    except Exception:
        text = data.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit:,} more)"


def short(text: str, limit: int = 120) -> str:
    """``text`` on one line, cut at ``limit`` characters with an ellipsis."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
