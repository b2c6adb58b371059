"""What an agent run tells a person and a tracer: progress lines, and its spans' GenAI attributes.

Progress goes to the ``promissory.agents`` logger at INFO: a run starts, resumes (its kept
steps replayed), waits (on a timer until when, on a person's promise by id, on sub-agents),
finishes, is canceled. Each record carries the same facts as data, in ``record.promissory``
(``promissory run --json`` prints them). The span of a run's handling is named
``invoke_agent NAME``; a model call's is ``chat MODEL`` with the GenAI semantic conventions'
attributes (model, token usage, finish reason).

Example:
    >>> logging.getLogger("promissory.agents").setLevel(logging.INFO)  # doctest: +SKIP
    >>> rt.run(lead, "Compare X and Y", id="agent/run/42")  # doctest: +SKIP
    run agent/run/42 (lead) started
    run agent/run/42 (lead) finished: final_answer after 2 turns, 1,234 tokens

"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import _tracing
from ..store import PromiseKind

if TYPE_CHECKING:
    from ..actors import Context
    from ._agent import RunResult
    from ._chat import ModelRequest, ModelResponse
    from ._model import Model

log = logging.getLogger("promissory.agents")

_SUB_RUN = re.compile(r"^(.+)/t\d+-\d+-[^/]+$")
"""A sub-agent's actor id: ``{parent run}/t{turn}-{index}-{tool}`` (see ``_Loop._run_chunk``);
its run's id is the id of the call's message."""


def _say(event: str, text: str, *args: Any, **facts: Any) -> None:
    log.info(text, *args, extra={"promissory": {"event": event, **facts}})


def run_began(ctx: Context, agent: str, continues: str | None = None) -> None:
    """A handling of a run's message begins: say whether it starts or resumes (``continues``:
    the canceled or timed-out run it goes on from); name its span.
    """
    kept = len(ctx._journal)
    sub = _SUB_RUN.match(ctx.actor_id)
    parent = sub.group(1) if sub else None
    _tracing.describe_handling(
        ctx.message_id,
        f"invoke_agent {agent}",
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": agent,
            "promissory.run.id": ctx.message_id,
        },
    )
    if not log.isEnabledFor(logging.INFO):
        return
    if ctx._cancel.requested.is_set():
        _say(
            "run.cleanup",
            "run %s (%s) was canceled; cleaning up",
            ctx.message_id,
            agent,
            run=ctx.message_id,
            agent=agent,
        )
    elif kept == 0:
        where = f", a sub-agent of {parent}" if parent else ""
        if continues:
            where += f", continuing {continues} from its last whole turn"
        _say(
            "run.started",
            "run %s (%s) started%s",
            ctx.message_id,
            agent,
            where,
            run=ctx.message_id,
            agent=agent,
            parent=parent,
            continues=continues,
        )
    else:
        _say(
            "run.resumed",
            "run %s (%s) resumes: %d kept steps replayed, not run again",
            ctx.message_id,
            agent,
            kept,
            run=ctx.message_id,
            agent=agent,
            replayed=kept,
        )


def run_waits(ctx: Context, agent: str, awaiting: list[str]) -> None:
    """A run's handler suspended: say on what it waits (read from the store)."""
    if not log.isEnabledFor(logging.INFO) or not awaiting:
        return
    try:
        found = ctx._store.get_many(awaiting)
    except Exception:  # a progress line never fails the run
        found = {}
    parts: list[str] = []
    for id in awaiting:
        p = found.get(id)
        if p is None:
            parts.append(f"promise {id}")
        elif p.kind is PromiseKind.TIMER:
            when = _when(p.timeout_at)
            what = "a retry" if "/retry-" in id else "a timer"
            parts.append(f"{what} until {when}")
        elif p.kind is PromiseKind.MESSAGE:
            parts.append(f"sub-agent {p.recipient or id}" if p.recipient else f"message {id}")
        else:
            until = f", timing out at {_when(p.timeout_at)}" if p.timeout_at else ""
            parts.append(f"promise {id} (settle it: promissory resolve {id}{until})")
    _say(
        "run.waiting",
        "run %s (%s) waits on %s",
        ctx.message_id,
        agent,
        "; ".join(parts),
        run=ctx.message_id,
        agent=agent,
        awaiting=awaiting,
    )


def run_finished(ctx: Context, agent: str, result: RunResult) -> None:
    """A run returned its result."""
    if not log.isEnabledFor(logging.INFO):
        return
    usage = result.usage
    cost = f", ${usage.cost:.4f}" if usage.cost is not None else ""
    _say(
        "run.finished",
        "run %s (%s) finished: %s after %d turns, %s tokens%s",
        ctx.message_id,
        agent,
        result.stop,
        result.turns,
        f"{usage.total_tokens:,}",
        cost,
        run=ctx.message_id,
        agent=agent,
        stop=result.stop,
        turns=result.turns,
        tokens=usage.total_tokens,
        cost=usage.cost,
    )


def run_ended(ctx: Context, agent: str, how: str, error: BaseException | None = None) -> None:
    """A run was canceled, timed out, or failed."""
    if not log.isEnabledFor(logging.INFO):
        return
    detail = f": {type(error).__name__}: {error}" if error is not None else ""
    _say(
        f"run.{how}",
        "run %s (%s) %s%s",
        ctx.message_id,
        agent,
        how,
        detail,
        run=ctx.message_id,
        agent=agent,
    )


def _when(at: datetime | None) -> str:
    if at is None:
        return "?"
    left = (at - datetime.now(UTC)).total_seconds()
    stamp = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} (in {left:,.0f} s)" if left > 0 else stamp


# -- spans of model calls -------------------------------------------------------------------


def model_asked(sid: str | None, model: Model, request: ModelRequest) -> None:
    """Name a model step's span for its model and set the request's GenAI attributes."""
    if sid is None or not _tracing.tracing_enabled():
        return
    provider, _, name = model.name.partition(":")
    if not name:
        provider, name = "promissory", model.name
    settings = request.settings
    _tracing.annotate_step(
        sid,
        f"chat {name}",
        {
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": name,
            "gen_ai.request.max_tokens": settings.max_tokens,
            "gen_ai.request.temperature": settings.temperature,
            "gen_ai.request.seed": settings.seed,
        },
    )


def model_answered(sid: str | None, response: ModelResponse) -> None:
    """Set a model call's response attributes: model, token usage, finish reason."""
    if sid is None or not _tracing.tracing_enabled():
        return
    usage = response.usage
    _tracing.annotate_step(
        sid,
        None,
        {
            "gen_ai.response.model": response.model or None,
            "gen_ai.response.finish_reasons": [response.stop_reason],
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens or None,
            "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens or None,
        },
    )
