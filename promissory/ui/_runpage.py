"""The page of a run (transcript, usage, waterfall) and the page of any promise.

Values shown are read from the store and escaped as text: a model's ``<script>`` is shown,
never run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..store import Promise, PromiseKind, PromiseState, views
from ._html import Markup, html, join, path_part
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
from ._runview import Bar, Item, RunView
from ._static import BAR_STEPS as STEPS

LONG = 60
"""A transcript longer than this is laid out by the browser only as it is scrolled to."""
CHUNK = 100
"""Waterfall rows are grouped by this many, so a browser lays out only the groups in view."""


def run_page(
    view: RunView, actor: str | None, csrf: str, back: str, more: bool, resumable: bool
) -> Markup:
    """A run: its facts and actions, usage, transcript and the waterfall of its steps."""
    run = view.run
    duration = (run.settled_at - run.created_at).total_seconds() if run.settled_at else None
    facts: list[list[Any]] = [
        ["agent", view.agent],
        ["state", state_badge(run.state)],
        ["started", when(run.created_at)],
        [
            "ended",
            html("{} ({})", when(run.settled_at), seconds(duration))
            if run.settled_at
            else "still running",
        ],
    ]
    if view.turns is not None:
        facts.append(["turns", view.turns])
    if view.stop is not None:
        facts.append(["stopped because", view.stop])
    if view.resumes:
        facts.append(["continues", run_link(view.resumes)])
    if actor:
        facts.append(["actor", actor_link(actor)])
    if run.timeout_at:
        facts.append(["deadline", when(run.timeout_at)])
    actions = []
    if not run.state.settled:
        actions.append(action_button("cancel", run.id, "Cancel run…", back))
    elif resumable:
        actions.append(action_button("resume", run.id, "Resume run…", back, danger=False))
    result: Markup = Markup("")
    if view.output is not None:
        result = html('<h2>Result</h2><div class="result">{}</div>', json_block(view.output))
    elif view.error:
        result = html('<h2>Result</h2><p class="error">{}</p>', view.error)
    return html(
        """<h1>Run <code>{id}</code></h1>
<div class="actions">{actions}<a class="button" href="{promise}">its promise</a></div>
{facts}{result}
<h2>Usage</h2>{usage}
<h2>Transcript</h2><ol class="transcript{long}">{items}</ol>
<h2>Timeline</h2>
<p class="legend">Every promise under the run, in the order made. A step's row is written when
it ends, so its start is shown as the end of what came before it in its handler.</p>
{more}{waterfall}""",
        id=run.id,
        actions=join(actions),
        promise="/promise/" + path_part(run.id),
        facts=table(["", ""], facts, "facts"),
        result=result,
        usage=_usage(view),
        items=join(_item(i, csrf, back) for i in view.items),
        long=" long" if len(view.items) > LONG else "",
        more=html('<p class="note">The first {} promises under the run.</p>', len(view.bars))
        if more
        else "",
        waterfall=_waterfall(view.bars, view.span),
    )


def _usage(view: RunView) -> Markup:
    rows: list[list[Any]] = []
    total = [0, 0, 0, 0, 0]
    for u in view.usage:
        values = [
            u.requests,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
        ]
        total = [a + b for a, b in zip(total, values, strict=True)]
        rows.append([u.agent, *(f"{v:,}" for v in values)])
    if len(rows) > 1:
        rows.append([html("<b>{}</b>", "all"), *(f"{v:,}" for v in total)])
    cost = (
        html(
            '<p class="cost">cost: <b>${}</b> (the run and its sub-agents)</p>', f"{view.cost:,.4f}"
        )
        if view.cost is not None
        else html(
            '<p class="cost">{}</p>',
            "cost: known once the run ends, for agents with prices="
            if not view.run.state.settled
            else "cost: no prices= were given",
        )
    )
    return html(
        "{}{}",
        table(
            ["agent", "model calls", "input tokens", "output tokens", "cache read", "cache write"],
            rows,
            "usage",
        ),
        cost,
    )


def _args(arguments: Any) -> Markup:
    return json_block(arguments)


def _item(item: Item, csrf: str, back: str) -> Markup:
    p = item.promise
    head = html(
        '<div class="head"><span class="kind">{}</span> <b>{}</b> {} <a class="id" href="{}">{}'
        "</a></div>",
        item.kind,
        item.title,
        state_badge(p.state),
        "/promise/" + path_part(p.id),
        p.id.rsplit("/", 1)[-1] if item.kind != "input" else "",
    )
    body: list[Markup] = []
    if item.kind == "model":
        if item.text:
            body.append(html('<div class="said">{}</div>', json_block(item.text)))
        for c in item.calls:
            body.append(
                html(
                    '<div class="call">calls <b>{}</b> <span class="id">{}</span>{}</div>',
                    c.name,
                    c.id,
                    _args(c.arguments),
                )
            )
    elif item.kind in ("tool", "agent"):
        if item.call is not None:
            body.append(html('<div class="call">{}</div>', _args(item.call.arguments)))
        if item.kind == "agent" and item.link:
            body.append(html('<div class="sub">sub-agent run {}</div>', run_link(item.link)))
        if item.text is not None:
            body.append(html('<div class="said">→ {}</div>', json_block(item.text)))
    elif item.kind == "promise":
        target = item.waiting
        if target is not None:
            body.append(
                html(
                    '<div class="sub">{} {}</div>',
                    promise_link(target.id),
                    state_badge(target.state),
                )
            )
            if not target.state.settled:
                body.append(settle_form(target, csrf, back))
        elif item.link:
            body.append(html('<div class="sub">{}</div>', promise_link(item.link)))
        if item.text is not None:
            body.append(html('<div class="said">→ {}</div>', json_block(item.text)))
    elif item.kind == "timer":
        body.append(html('<div class="sub">until {}</div>', when(p.timeout_at)))
    elif item.text is not None:
        body.append(json_block(item.text))
    if item.error:
        body.append(html('<p class="error">{}</p>', item.error))
    return html('<li class="item k-{}">{}{}</li>', item.kind, head, join(body))


def _waterfall(bars: Sequence[Bar], span: float) -> Markup:
    """Rows of label, state, start, duration and a bar placed on the run's span (in steps of
    ``1/STEPS`` of it, by class names: the page's policy allows no inline style).
    """
    scale = STEPS / span if span > 0 else 0.0
    chunks = []
    for first in range(0, len(bars), CHUNK):
        rows = []
        for b in bars[first : first + CHUNK]:
            x = min(STEPS - 1, int(b.start * scale))
            w = min(STEPS - x, max(1, round((b.end - b.start) * scale)))
            rows.append(
                html(
                    '<div class="wf-row d{depth}"><span class="what">{indent}{link}</span>'
                    '<span>{state}</span><span class="num">{start}</span>'
                    '<span class="num">{took}</span><span class="lane" title="{aria}">'
                    '<i class="bar k-{kind} s-{cls} x{x} w{w}{open}"></i></span></div>',
                    depth=min(b.depth, 6),
                    indent="· " * b.depth,
                    link=promise_link(b.promise.id, b.label),
                    state=state_badge(b.promise.state),
                    start=f"+{seconds(b.start)}" if b.start else "0",
                    took=seconds(b.end - b.start) + ("…" if b.open else ""),
                    aria=f"{b.label}: +{b.start:.3f} s to +{b.end:.3f} s",
                    kind=b.promise.kind.value,
                    cls=b.promise.state.value.replace("_", "-"),
                    x=x,
                    w=w,
                    open=" open" if b.open else "",
                )
            )
        # Whole chunks of a long run are laid out only when scrolled to.
        lazy = " lazy" if len(rows) == CHUNK and len(bars) > CHUNK else ""
        chunks.append(html('<div class="wf-chunk{}">{}</div>', lazy, join(rows)))
    return html(
        '<div class="waterfall"><div class="wf-row wf-head"><span>step</span><span>state</span>'
        '<span class="num">start</span><span class="num">took</span><span class="lane">0 — {}'
        "</span></div>{}</div>",
        seconds(span),
        join(chunks),
    )


def promise_page(
    p: Promise,
    extra: views.Extra,
    children: Sequence[Promise],
    csrf: str,
    back: str,
    now: datetime,
    is_run: bool,
) -> Markup:
    """A promise: its row, who waits on it (and what it waits on), its history, its children."""
    facts: list[list[Any]] = [
        ["kind", p.kind.value],
        ["state", state_badge(p.state)],
    ]
    if p.recipient:
        facts.append(["for actor", actor_link(p.recipient)])
    if extra.owner:
        facts.append(["owned by run", run_link(extra.owner)])
    parent = p.id.rpartition("/")[0]
    if parent:
        facts.append(["under", promise_link(parent)])
    if p.fingerprint:
        facts.append(["asked for", p.fingerprint])
    if p.tags:
        facts.append(["tags", json_block(p.tags)])
    history: list[list[Any]] = [[when(p.created_at), "created"]]
    if p.attempt:
        history.append(
            ["", f"attempt {p.attempt}" + (" (retrying)" if not p.state.settled else "")]
        )
    if p.next_attempt_at and not p.state.settled:
        history.append([when(p.next_attempt_at), "next attempt"])
    if extra.awaiting and not p.state.settled:
        history.append(
            [
                "",
                html(
                    "suspended, waiting on {}",
                    join((promise_link(a) for a in extra.awaiting), ", "),
                ),
            ]
        )
    if p.timeout_at:
        history.append([when(p.timeout_at), "times out" if not p.state.settled else "timeout"])
    if p.settled_at:
        took = (p.settled_at - p.created_at).total_seconds()
        history.append(
            [when(p.settled_at), html("settled: {} after {}", state_badge(p.state), seconds(took))]
        )
    actions: list[Markup] = []
    if is_run:
        actions.append(
            html('<a class="button" href="{}">its run page</a>', "/run/" + path_part(p.id))
        )
    if not p.state.settled and p.kind in (PromiseKind.PROMISE, PromiseKind.MESSAGE):
        actions.append(action_button("cancel", p.id, "Cancel…", back))
    settle = (
        settle_form(p, csrf, back)
        if (not p.state.settled and p.kind is PromiseKind.PROMISE)
        else Markup("")
    )
    waiters = (
        join(html("<li>{}</li>", run_link(w)) for w in extra.waiters)
        if extra.waiters
        else html("<li>{}</li>", "nobody waits on it now")
    )
    return html(
        """<h1>Promise <code>{id}</code></h1>
<div class="actions">{actions}</div>{settle}
{facts}
<h2>Param</h2>{param}
<h2>Value</h2>{value}
<h2>Waited on by</h2><ul class="waiters">{waiters}</ul>
<h2>History</h2>{history}
<h2>Under it</h2>{children}""",
        id=p.id,
        actions=join(actions),
        settle=settle,
        facts=table(["", ""], facts, "facts"),
        param=json_block(None, bytes(p.param)) if p.param is not None else "none",
        value=json_block(None, bytes(p.value))
        if p.value is not None
        else ("none yet" if not p.state.settled else "none"),
        waiters=waiters,
        history=table(["when", "what"], history, "history"),
        children=table(
            ["id", "kind", "state", "created", "settled"],
            [
                [
                    promise_link(c.id, c.id[len(p.id) :]),
                    c.kind.value,
                    state_badge(c.state),
                    when(c.created_at),
                    when(c.settled_at),
                ]
                for c in children
            ],
        ),
    )


def is_run_message(p: Promise) -> bool:
    """Whether the promise is a message that started an agent run."""
    return p.kind is PromiseKind.MESSAGE and p.tags.get("promissory:type") == "RunTask"


def resumable(p: Promise) -> bool:
    """Whether a run can be resumed: canceled or timed out."""
    return p.state in (PromiseState.REJECTED_CANCELED, PromiseState.REJECTED_TIMEDOUT)
