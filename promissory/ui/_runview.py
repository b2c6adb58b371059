"""A run as the web view shows it: its transcript, its usage, and the timing of its steps.

Built from the run's promise and every promise under it (``_queries.under``), with no store
access of its own. The transcript follows the run's steps in creation order: each model turn
(its text and the tool calls it asked for, with their arguments), each tool call's result (its
arguments found in the turn that asked for it), each sub-agent call (a link to its own run),
each promise a handler waited on, each timer. Stored values are data, never markup: the pages
escape all of them.

Example:
    >>> promises, _ = under(store, "agent/run/42")  # doctest: +SKIP
    >>> view = build(promises[0], promises[1:], now)  # doctest: +SKIP

"""

from __future__ import annotations

import heapq
import re
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..store import Promise, PromiseKind, PromiseState

_ONE_WRITE = timedelta(milliseconds=2)
"""A step whose row was settled this soon after it was made was kept in one write."""
_SUB_ACTOR = re.compile(r"/t(\d+)-(\d+)-([^/]+)$")


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call a model asked for."""

    id: str
    name: str
    arguments: Any


class Item(msgspec.Struct, kw_only=True):
    """One entry of a transcript.

    Attributes:
        kind: ``input``, ``model``, ``tool``, ``agent`` (a sub-agent call), ``promise``,
            ``timer``, ``step`` or ``canceled``.
        promise: the promise it was read from.
        title: what it is, in a few words (``model:lead``, ``search``…).
        text: a model's text; a tool's, sub-agent's or step's result; the input.
        calls: a model turn's tool calls.
        call: for a tool or sub-agent result, the call that asked for it.
        error: the failure, for a rejected step.
        link: a page for it (a sub-agent's run, an awaited promise).
        waiting: an awaited promise that is still pending (an approval).

    """

    kind: str
    promise: Promise
    title: str
    text: Any = None
    calls: list[Call] = []
    call: Call | None = None
    error: str | None = None
    link: str | None = None
    waiting: Promise | None = None


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """One promise on the waterfall: when it began and ended, relative to the run's start."""

    promise: Promise
    label: str
    depth: int
    start: float
    end: float
    open: bool


class UsageRow(msgspec.Struct, kw_only=True):
    """Tokens (and, once finished, cost) of one agent's model calls within the run."""

    agent: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class RunView(msgspec.Struct, kw_only=True):
    """Everything the run page shows.

    Attributes:
        run: the run's promise (its message).
        agent: the agent's name (from the task), or the message's type.
        input: the task's input.
        output: the result's output, once resolved.
        stop: why it stopped, once resolved.
        turns: model calls it made, once resolved.
        cost: the cost of the run and its sub-agents, once resolved with prices.
        error: the failure, once rejected.
        resumes: the run it continues, if it was resumed from another.
        items: the transcript.
        bars: the waterfall, in creation order.
        span: seconds from the run's start to the last end on the waterfall.
        usage: tokens by agent, live (summed over every model step under the run).

    """

    run: Promise
    agent: str
    input: Any
    output: Any = None
    stop: str | None = None
    turns: int | None = None
    cost: float | None = None
    error: str | None = None
    resumes: str | None = None
    items: list[Item] = []
    bars: list[Bar] = []
    span: float = 0.0
    usage: list[UsageRow] = []


def label(p: Promise) -> str:
    """What a promise is, in a word or two: ``model:lead``, ``tool:search``, ``timer``."""
    if p.kind is PromiseKind.MESSAGE:
        return f"{p.tags.get('promissory:type', 'message')} → {p.recipient}"
    if p.kind is PromiseKind.TIMER:
        return "retry timer" if "/retry-" in p.id else "timer"
    if p.kind is PromiseKind.PROMISE:
        return "promise"
    fp = p.fingerprint or "step"
    kind, _, rest = fp.partition(":")
    if kind == "step":
        name = rest.rsplit(":", 1)[0] if rest.count(":") >= 1 else rest
        return name
    if kind == "promise":
        return f"waits on {rest}"
    return kind


def _value(p: Promise) -> Any:
    try:
        return p.value_as()
    except Exception:
        return bytes(p.value or b"").decode(errors="replace")


def _error(p: Promise) -> str | None:
    info = p.error()
    if info is None:
        return None
    return f"{info.type.rsplit('.', 1)[-1]}: {info.message}"


def build(
    run: Promise,
    under: list[Promise],
    now: datetime,
    awaited: dict[str, Promise] | None = None,
) -> RunView:
    """The view of ``run`` from the promises ``under`` it (creation order) and, for the
    promises its handlers waited on by id, their records (``awaited``).
    """
    try:
        task: Any = run.param_as()
    except Exception:
        task = None
    task = task if isinstance(task, dict) else {}
    view = RunView(
        run=run,
        agent=str(task.get("agent") or run.tags.get("promissory:type", "message")),
        input=task.get("input"),
        resumes=task.get("resume"),
    )
    if run.state is PromiseState.RESOLVED:
        result = _value(run)
        if isinstance(result, dict):
            view.output = result.get("output")
            view.stop = result.get("stop")
            view.turns = result.get("turns")
            usage = result.get("usage")
            if isinstance(usage, dict):
                view.cost = usage.get("cost")
        else:
            view.output = result
    elif run.state.rejected:
        view.error = _error(run) or run.state.value
    view.items = _transcript(run, under, awaited or {})
    view.bars, view.span = _waterfall(run, under, now)
    view.usage = _usage(under)
    return view


def _transcript(run: Promise, under: list[Promise], awaited: dict[str, Promise]) -> list[Item]:
    items = [Item(kind="input", promise=run, title="task", text=_task_input(run))]
    prefix = run.id + "/"
    turns: list[list[Call]] = []
    pending_calls: dict[str, list[Call]] = defaultdict(list)
    for p in under:
        rest = p.id[len(prefix) :]
        if "/" in rest:
            continue  # deeper: a sub-run's own steps, a retry timer
        fp = p.fingerprint or ""
        if fp.startswith("step:model:"):
            items.append(_model_item(p, turns, pending_calls))
        elif fp.startswith("step:tool:"):
            name = label(p).removeprefix("tool:")
            queue = pending_calls.get(name)
            call = queue.pop(0) if queue else None
            items.append(
                Item(
                    kind="tool",
                    promise=p,
                    title=name,
                    text=_value(p) if p.state is PromiseState.RESOLVED else None,
                    call=call,
                    error=_error(p),
                )
            )
        elif fp.startswith("step:canceled_calls"):
            items.append(Item(kind="canceled", promise=p, title="canceled calls", text=_value(p)))
        elif p.kind is PromiseKind.MESSAGE and p.recipient:
            items.append(_agent_item(p, turns, pending_calls))
        elif fp.startswith("promise:"):
            target = fp.removeprefix("promise:")
            record = awaited.get(target)
            items.append(
                Item(
                    kind="promise",
                    promise=p,
                    title=f"waits on {target}",
                    link=target,
                    waiting=record,
                    text=_value(record) if record is not None and record.state.settled else None,
                    error=_error(record) if record is not None else None,
                )
            )
        elif p.kind is PromiseKind.PROMISE:
            items.append(
                Item(
                    kind="promise",
                    promise=p,
                    title=f"waits on {p.id}",
                    link=p.id,
                    waiting=p,
                    text=_value(p) if p.state.settled else None,
                    error=_error(p),
                )
            )
        elif p.kind is PromiseKind.TIMER:
            items.append(Item(kind="timer", promise=p, title="sleeps", text=p.timeout_at))
        elif fp.startswith(("spawn:", "watch:")):
            continue  # bookkeeping: the sub-agent's call below shows it
        elif p.kind is PromiseKind.STEP:
            items.append(
                Item(
                    kind="step",
                    promise=p,
                    title=label(p),
                    text=_value(p) if p.state is PromiseState.RESOLVED else None,
                    error=_error(p),
                )
            )
    return items


def _task_input(run: Promise) -> Any:
    try:
        task: Any = run.param_as()
    except Exception:
        return None
    return task.get("input") if isinstance(task, dict) else task


def _model_item(p: Promise, turns: list[list[Call]], pending: dict[str, list[Call]]) -> Item:
    name = label(p)
    if p.state is not PromiseState.RESOLVED:
        return Item(kind="model", promise=p, title=name, error=_error(p))
    value = _value(p)
    message = value.get("message") if isinstance(value, dict) else None
    parts = message.get("parts", []) if isinstance(message, dict) else []
    text = "".join(str(x.get("text", "")) for x in parts if x.get("type") == "text")
    calls = [
        Call(
            id=str(x.get("id", "")),
            name=str(x.get("name", "")),
            arguments=x.get("arguments") if x.get("raw_arguments") is None else x["raw_arguments"],
        )
        for x in parts
        if x.get("type") == "tool_call"
    ]
    turns.append(calls)
    pending.clear()
    for c in calls:
        pending[c.name].append(c)
    return Item(kind="model", promise=p, title=name, text=text, calls=calls)


def _agent_item(p: Promise, turns: list[list[Call]], pending: dict[str, list[Call]]) -> Item:
    match = _SUB_ACTOR.search(p.recipient or "")
    call = None
    name = p.recipient or p.id
    if match:
        turn, index, name = int(match.group(1)), int(match.group(2)), match.group(3)
        if 0 < turn <= len(turns) and index < len(turns[turn - 1]):
            call = turns[turn - 1][index]
            queue = pending.get(call.name, [])
            if call in queue:
                queue.remove(call)
    output = None
    if p.state is PromiseState.RESOLVED:
        result = _value(p)
        output = result.get("output") if isinstance(result, dict) else result
    return Item(
        kind="agent",
        promise=p,
        title=name,
        text=output,
        call=call,
        error=_error(p),
        link=p.id,
    )


def _waterfall(run: Promise, under: list[Promise], now: datetime) -> tuple[list[Bar], float]:
    t0 = run.created_at
    bars = []
    last = 0.0
    base = run.id.count("/")
    # A step kept in one write (most are) has no row until it ends, so its row's creation is
    # its end. It began when the operation before it in its handler ended: the latest end
    # among the promises made before it under the same message (or that message's creation).
    # (Ends still to come are kept in a heap per message, and count once they have passed.)
    ended: dict[str, datetime] = {}
    later: dict[str, list[datetime]] = defaultdict(list)
    created: dict[str, datetime] = {}
    for p in [run, *under]:
        parent = p.id.rpartition("/")[0]
        began = p.created_at
        coming = later[parent]
        while coming and coming[0] <= began:
            passed = heapq.heappop(coming)
            ended[parent] = max(ended.get(parent, passed), passed)
        kept_at_once = p.settled_at is not None and p.settled_at - began < _ONE_WRITE
        if p.kind is PromiseKind.STEP and kept_at_once:
            began = min(began, ended.get(parent) or created.get(parent) or began)
        created[p.id] = p.created_at
        ended[parent] = max(ended.get(parent, p.created_at), p.created_at)
        if p.settled_at is not None:
            heapq.heappush(coming, p.settled_at)
        end_at = p.settled_at or now
        start = (began - t0).total_seconds()
        end = max(start, (end_at - t0).total_seconds())
        last = max(last, end)
        bars.append(
            Bar(
                promise=p,
                label=label(p),
                depth=p.id.count("/") - base,
                start=start,
                end=end,
                open=p.settled_at is None,
            )
        )
    return bars, last


def _usage(under: list[Promise]) -> list[UsageRow]:
    rows: dict[str, UsageRow] = {}
    for p in under:
        fp = p.fingerprint or ""
        if not fp.startswith("step:model:") or p.state is not PromiseState.RESOLVED:
            continue
        value = _value(p)
        usage = value.get("usage") if isinstance(value, dict) else None
        if not isinstance(usage, dict):
            continue
        agent = label(p).removeprefix("model:")
        row = rows.setdefault(agent, UsageRow(agent=agent))
        row.requests += int(usage.get("requests", 0) or 0)
        row.input_tokens += int(usage.get("input_tokens", 0) or 0)
        row.output_tokens += int(usage.get("output_tokens", 0) or 0)
        row.cache_read_tokens += int(usage.get("cache_read_tokens", 0) or 0)
        row.cache_write_tokens += int(usage.get("cache_write_tokens", 0) or 0)
    return list(rows.values())
