"""The frame of every page (header, navigation, live marker) and the small pieces pages share.

A page is its ``<main>`` content; ``page`` wraps it for a full load, and a live refresh asks
for the ``<main>`` alone (the ``X-Promissory-Partial`` header), so the browser swaps it in
without a reload. ``data-watch`` on ``<body>`` says which store events the page follows: an id
prefix, or ``*`` for all.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from ..store import Promise
from ._html import Markup, html, join, path_part, url


def page(
    title: str, body: Markup, *, watch: str = "*", note: str | None = None, since: str = ""
) -> Markup:
    """A whole page: the frame around ``body``; it follows ``watch`` from stamp ``since``."""
    return html(
        """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · promissory</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body data-watch="{watch}" data-since="{since}">
<header>
<a class="brand" href="/">promissory</a>
<nav><a href="/">forest</a><a href="/approvals">approvals</a><a href="/search">search</a></nav>
<form class="jump" action="/search" method="get">
<input name="prefix" placeholder="id or id prefix…" aria-label="id or id prefix">
</form>
<span id="live" class="live" title="updates as rows change">live</span>
</header>
{note}
<main id="main">{body}</main>
</body></html>
""",
        title=title,
        watch=watch,
        since=since,
        body=body,
        note=html('<p class="note" role="status">{}</p>', note) if note else Markup(""),
    )


@functools.lru_cache(maxsize=64)
def state_badge(state: str) -> Markup:
    """A promise's or actor's state as a coloured word."""
    return html('<span class="state s-{}">{}</span>', state.replace("_", "-"), str(state))


def promise_link(id: str, text: str | None = None) -> Markup:
    """A link to a promise's page."""
    return html('<a href="{}">{}</a>', "/promise/" + path_part(id), text or id)


def run_link(id: str, text: str | None = None) -> Markup:
    """A link to a run's page."""
    return html('<a href="{}">{}</a>', "/run/" + path_part(id), text or id)


def actor_link(id: str, text: str | None = None) -> Markup:
    """A link to an actor's page."""
    return html('<a href="{}">{}</a>', "/actor/" + path_part(id), text or id)


def when(at: datetime | None) -> Markup:
    """A time, to the millisecond, in UTC (the full stamp on hover)."""
    if at is None:
        return Markup("")
    at = at.astimezone(UTC)
    return html('<time datetime="{}">{}</time>', at.isoformat(), at.strftime("%H:%M:%S.%f")[:-3])


def seconds(value: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.3 s``, ``4 min``."""
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:,.0f} ms"
    if value < 120:
        return f"{value:,.1f} s"
    if value < 7200:
        return f"{value / 60:,.0f} min"
    return f"{value / 3600:,.1f} h"


def json_block(value: Any, raw: bytes | None = None) -> Markup:
    """A value as indented JSON in a ``<pre>`` (text values as they are)."""
    from ._html import pretty_json

    if raw is not None:
        return html('<pre class="json">{}</pre>', pretty_json(raw))
    if isinstance(value, str):
        return html('<pre class="text">{}</pre>', value)
    import msgspec

    try:
        data = msgspec.json.encode(value)
    except Exception:
        return html('<pre class="text">{}</pre>', repr(value))
    return html('<pre class="json">{}</pre>', pretty_json(data))


def table(headers: list[str], rows: list[list[Any]], cls: str = "") -> Markup:
    """A table of escaped cells (``Markup`` cells as they are)."""
    head = join(html("<th>{}</th>", h) for h in headers)
    body = join(html("<tr>{}</tr>", join(html("<td>{}</td>", c) for c in row)) for row in rows)
    if not rows:
        body = html('<tr><td colspan="{}" class="empty">nothing here</td></tr>', len(headers))
    return html(
        '<table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', cls, head, body
    )


def action_button(action: str, id: str, text: str, back: str, danger: bool = True) -> Markup:
    """A link to the confirmation page of an action on ``id``."""
    return html(
        '<a class="button{}" href="{}">{}</a>',
        " danger" if danger else "",
        url("/confirm", action=action, id=id, back=back),
        text,
    )


def settle_form(p: Promise, csrf: str, back: str) -> Markup:
    """Approve / Reject buttons that settle a pending promise (as ``promissory resolve``)."""
    return html(
        """<form class="settle" method="post" action="/act/resolve">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}">
<input type="hidden" name="back" value="{back}"><input type="hidden" name="value" value="true">
<button type="submit" class="approve">Approve</button></form>
<form class="settle" method="post" action="/act/reject">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}">
<input type="hidden" name="back" value="{back}">
<input type="hidden" name="error" value="rejected from the web view">
<button type="submit" class="reject">Reject</button></form>
<details class="custom"><summary>resolve with a value…</summary>
<form method="post" action="/act/resolve">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}">
<input type="hidden" name="back" value="{back}">
<input name="value" placeholder='JSON, e.g. {{"approved": true}}' aria-label="value as JSON">
<button type="submit">Resolve</button></form></details>""",
        csrf=csrf,
        id=p.id,
        back=back,
    )
