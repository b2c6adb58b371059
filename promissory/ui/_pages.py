"""The forest, the approvals, the search, an actor, and the confirmation of an action.

Each function takes what it shows (read by ``_queries``) and returns the page's ``<main>``
content as ``Markup``; every stored value goes through ``html``'s escaping.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..cli import ACTOR_STATUSES
from ..store import Promise, PromiseState, views
from ._html import Markup, html, join, short, url
from ._layout import (
    action_button,
    actor_link,
    json_block,
    promise_link,
    run_link,
    seconds,
    settle_form,
    state_badge,
    table,
    when,
)

AGENT_RUN = "agent:"
"""The kind an agent's runs are kept under starts with this (``agent:<name>``)."""
"""The class of an agent run's actor: its page is the run's."""

STATES = [s.value for s in PromiseState]
KINDS = ["promise", "timer", "message", "step"]


# -- the forest ------------------------------------------------------------------------------


def forest_page(
    rows: list[views.ActorRow], more: bool, root: str | None, status: str | None, limit: int
) -> Markup:
    """The supervision forest: every tree (or one), an actor a line, children indented."""
    by_id = {r.id: r for r in rows}
    children: dict[str | None, list[views.ActorRow]] = {}
    for r in rows:
        parent = r.parent if r.parent in by_id and r.id != root else None
        children.setdefault(parent, []).append(r)
    lines: list[list[Any]] = []

    def walk(row: views.ActorRow, depth: int) -> None:
        lines.append(_actor_cells(row, depth, by_id.get(row.parent or "")))
        for c in children.get(row.id, []):
            walk(c, depth + 1)

    for top in children.get(None, []):
        walk(top, 0)
    options = join(
        html('<option value="{}"{}>{}</option>', s, " selected" if s == status else "", s)
        for s in ["", *ACTOR_STATUSES]
    )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = join((html("{} {}", n, state_badge(s)) for s, n in sorted(counts.items())), " · ")
    return html(
        """<h1>Supervision forest</h1>
<form class="filters" method="get" action="/">
<label>root <input name="root" value="{root}" placeholder="an actor id"></label>
<label>status <select name="status">{options}</select></label>
<label>limit <input name="limit" value="{limit}" size="5"></label>
<button type="submit">show</button></form>
<p class="summary">{n} actor(s): {summary}{more}</p>
{table}
<p class="legend">{legend}</p>""",
        root=root or "",
        options=options,
        limit=limit,
        n=len(rows),
        summary=summary,
        more=html(" (more: raise the limit to see past {})", limit) if more else "",
        table=table(
            [
                "actor",
                "type",
                "status",
                "node",
                "restarts",
                "intensity window",
                "backoff",
                "pending",
            ],
            lines,
            "forest",
        ),
        legend=join((html("<b>{}</b>: {}", k, v) for k, v in ACTOR_STATUSES.items()), " · "),
    )


def _actor_cells(row: views.ActorRow, depth: int, parent: views.ActorRow | None) -> list[Any]:
    name = row.id if depth == 0 or parent is None else row.id[len(parent.id) :]
    link = (
        run_link(row.id, name)
        if row.kind.startswith(AGENT_RUN) and depth == 0
        else actor_link(row.id, name)
    )
    indent = html('<span class="indent" data-depth="{}">{}</span>', depth, "· " * depth)
    node = (
        html(
            '{} <span class="{}">{}</span>',
            row.node,
            "ok" if row.hosted else "gone",
            "live" if row.hosted else "gone",
        )
        if row.node
        else ""
    )
    backoff = ""
    if row.status == "restarting" and row.restart_at is not None:
        left = row.restart_at.timestamp() - row.now
        backoff = f"restarts in {seconds(max(0.0, left))}"
    return [
        html("{}{}", indent, link),
        row.kind.rsplit(":", 1)[-1],
        state_badge(row.status),
        node,
        row.restarts,
        _window(row, parent),
        backoff,
        row.pending,
    ]


def _window(row: views.ActorRow, parent: views.ActorRow | None) -> str:
    parts = []
    if parent is None or not parent.supervisor:
        intensity = int(row.spec.get("intensity", 1))
        period = float(row.spec.get("period", 5.0))
        recent = sum(1 for t in row.history if t > row.now - period)
        parts.append(f"{recent} of {intensity} in {period:g} s")
    else:
        parts.append("its supervisor's")
    if row.supervisor and row.supervisor_history is not None:
        parts.append(f"children: {len(row.supervisor_history)} recent restart(s)")
    return "; ".join(parts)


# -- an actor --------------------------------------------------------------------------------


def actor_page(actor: dict[str, Any], mailbox: list[Promise], back: str) -> Markup:
    """An actor: its row, its state snapshot, its pending messages; cancel it."""
    alive = actor["stored_status"] in ("running", "restarting")
    node = actor["node"]
    rows = [
        [
            "status",
            html("{} {}", state_badge(actor["status"]), ACTOR_STATUSES.get(actor["status"], "")),
        ],
        ["type", actor["kind"]],
        ["incarnation", f"{actor['incarnation']} (restarts so far; epoch {actor['epoch']})"],
        ["hosted by", f"{node} ({'live' if actor['hosted'] else 'gone'})" if node else "nobody"],
        ["parent", actor_link(actor["parent"]) if actor["parent"] else "none (top level)"],
        ["children", actor["children"]],
        ["created", when(actor["created_at"])],
        ["updated", when(actor["updated_at"])],
    ]
    if actor["restart_at"] is not None:
        rows.append(["restart at", when(actor["restart_at"])])
    state = actor["state"]
    return html(
        """<h1>Actor <code>{id}</code></h1>
<div class="actions">{run}{cancel}</div>
{info}
<h2>Pending messages</h2>{mailbox}
<h2>State</h2>{state}""",
        id=actor["id"],
        run=run_link(actor["id"], "its run") if actor["kind"].startswith(AGENT_RUN) else "",
        cancel=action_button("cancel", actor["id"], "Cancel this actor…", back) if alive else "",
        info=table(["", ""], rows, "facts"),
        mailbox=table(
            ["message", "type", "state", "created"],
            [
                [
                    promise_link(p.id),
                    p.tags.get("promissory:type", ""),
                    state_badge(p.state),
                    when(p.created_at),
                ]
                for p in mailbox
            ],
        ),
        state=json_block(None, bytes(state)) if state is not None else "none kept yet",
    )


# -- approvals -------------------------------------------------------------------------------


def approvals_page(
    pending: Sequence[Promise], extra: dict[str, views.Extra], csrf: str, back: str
) -> Markup:
    """The promises waiting for a person (or another outside party), with Approve/Reject."""
    rows = []
    for p in pending:
        e = extra.get(p.id, views.Extra())
        waiters = join((run_link(w) for w in e.waiters), ", ") if e.waiters else ""
        rows.append(
            [
                promise_link(p.id),
                run_link(e.owner) if e.owner else "",
                waiters,
                when(p.created_at),
                when(p.timeout_at) if p.timeout_at else "never",
                short(bytes(p.param).decode(), 80) if p.param is not None else "",
                settle_form(p, csrf, back),
            ]
        )
    return html(
        """<h1>Pending approvals</h1>
<p class="summary">Promises a person or another system settles (<code>ctx.promise</code>), still
pending. Approve resolves one with <code>true</code>, as
<code>promissory resolve ID --value true</code> does; Reject rejects it.</p>
{table}""",
        table=table(
            ["promise", "run", "waited on by", "created", "times out", "param", ""],
            rows,
            "approvals",
        ),
    )


# -- search ----------------------------------------------------------------------------------


def search_page(
    found: Sequence[Promise],
    cursor: str | None,
    query: dict[str, str],
    error: str | None = None,
) -> Markup:
    """Promises by id prefix, state, kind and age (newest last), a page at a time."""
    state_opts = join(
        html(
            '<option value="{}"{}>{}</option>', s, " selected" if s == query.get("state") else "", s
        )
        for s in ["", *STATES]
    )
    kind_opts = join(
        html(
            '<option value="{}"{}>{}</option>', k, " selected" if k == query.get("kind") else "", k
        )
        for k in ["", *KINDS]
    )
    rows = [
        [
            promise_link(p.id),
            p.kind.value,
            state_badge(p.state),
            when(p.created_at),
            when(p.settled_at),
            html("{}", short(_brief(p), 100)),
        ]
        for p in found
    ]
    more = (
        html('<p><a href="{}">next page</a></p>', url("/search", **{**query, "cursor": cursor}))
        if cursor
        else ""
    )
    return html(
        """<h1>Search promises</h1>
<form class="filters" method="get" action="/search">
<label>id prefix <input name="prefix" value="{prefix}" placeholder="agent/run/"></label>
<label>state <select name="state">{states}</select></label>
<label>kind <select name="kind">{kinds}</select></label>
<label>age <input name="age" value="{age}" size="6" placeholder="15m, 2h, 7d"></label>
<label>limit <input name="limit" value="{limit}" size="5"></label>
<button type="submit">search</button></form>
{error}{table}{more}""",
        prefix=query.get("prefix", ""),
        states=state_opts,
        kinds=kind_opts,
        age=query.get("age", ""),
        limit=query.get("limit", "100"),
        error=html('<p class="error">{}</p>', error) if error else "",
        table=table(["id", "kind", "state", "created", "settled", "value"], rows),
        more=more,
    )


def _brief(p: Promise) -> str:
    raw = p.value if p.state.settled else p.param
    return bytes(raw).decode(errors="replace") if raw is not None else ""


# -- confirmation ----------------------------------------------------------------------------

CONFIRM = {
    "cancel": (
        "Cancel {id}?",
        "A run (a promise): it and every pending promise under it are canceled, in one "
        "transaction; its handlers clean up. An actor: its pending messages are canceled and "
        "it and its children end. The same as promissory cancel.",
    ),
    "resume": (
        "Resume {id}?",
        "The canceled or timed-out run continues from its last whole turn, as a new run, "
        "hosted by this process (its agents must be importable here: start promissory ui with "
        "--module). The same as promissory resume.",
    ),
}


def confirm_page(action: str, id: str, csrf: str, back: str, found: bool) -> Markup:
    """Ask before an action: what it does, a button that does it, a way back."""
    title, text = CONFIRM[action]
    if not found:
        return html(
            '<h1>Nothing has the id <code>{}</code></h1><p><a href="{}">back</a></p>', id, back
        )
    return html(
        """<h1>{title}</h1><p>{text}</p>
<form method="post" action="/act/{action}">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}">
<input type="hidden" name="back" value="{back}">
{reason}<button type="submit" class="danger" id="confirm">{verb}</button>
<a class="button" href="{back}">No, go back</a></form>""",
        title=title.format(id=id),
        text=text,
        action=action,
        csrf=csrf,
        id=id,
        back=back,
        reason=html(
            '<label>reason <input name="reason" value="canceled from the web view"></label>'
        )
        if action == "cancel"
        else "",
        verb={"cancel": "Yes, cancel it", "resume": "Yes, resume it"}[action],
    )


def error_page(title: str, text: str) -> Markup:
    """A page that says what went wrong."""
    return html('<h1>{}</h1><p class="error">{}</p>', title, text)


def fmt_now(now: datetime) -> str:
    """The database clock, for a page's footer."""
    return now.isoformat(timespec="seconds")
