"""Human-in-the-loop: a tool waits on a durable promise, the run suspends holding no thread,
and it goes on when the promise is settled, by the CLI in another process, even after the
runtime that started it was closed."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from promissory.actors import Context
from promissory.agents import Agent, RunHandle, ScriptedModel, ToolResult, call, reply
from promissory.runtime import Runtime
from tests.actors.kit import ROOT, eventually, sql

from .test_loop import results_in


def request_approval(ctx: Context, action: str) -> str:
    """Ask a person to approve an action; wait for the answer.

    Args:
        action: what is to be done.
    """
    run = ctx.message_id.rsplit("/", 1)[-1]
    decision = ctx.promise(id=f"approvals/{run}", param={"action": action}).result(dict)
    return "approved" if decision["approved"] else f"refused: {decision.get('why', '')}"


def promissory_cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``promissory --dsn DSN args…`` in another process."""
    return subprocess.run(
        [sys.executable, "-m", "promissory", "--dsn", dsn, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def approval_agent(name: str) -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel(
        [
            reply("Asking first.", call("request_approval", "c1", action="deploy v2")),
            "Deployed v2.",
        ]
    )
    return Agent(name, "Deploy with care.", model, tools=[request_approval]), model


def waiting_on(dsn: str, run_id: str, approval: str) -> None:
    """Wait until the run waits on ``approval``, suspended in the store."""
    eventually(
        lambda: sql(
            dsn,
            "SELECT 1 FROM promises WHERE id = %s AND state = 'pending' AND %s = ANY(awaiting)",
            run_id,
            approval,
        ),
        timeout=10,
        what=f"{run_id} suspended on {approval}",
    )


def test_an_approval_settled_by_the_cli_resumes_the_suspended_run(rt: Runtime, dsn: str) -> None:
    agent, model = approval_agent("human_cli")
    handle = rt.start(agent, "Deploy v2.", id="agent/run/h1")
    waiting_on(dsn, "agent/run/h1", "approvals/h1")
    # Suspended: no activation (no thread) holds the run while it waits.
    eventually(lambda: rt.host.live_activations() == 0, what="no live activation")
    assert rt.host.suspended_count() == 1
    assert not handle.done()
    [(state, param)] = sql(dsn, "SELECT state, param FROM promises WHERE id = 'approvals/h1'")
    assert (state, param) == ("pending", {"action": "deploy v2"})
    assert model.calls == 1

    done = promissory_cli(dsn, "resolve", "approvals/h1", "--value", '{"approved": true}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "approvals/h1: resolved"

    assert handle.result(timeout=30) == "Deployed v2."
    assert model.calls == 2  # the kept first turn was not asked again
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="request_approval", content="approved")
    ]
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'agent/run/h1'")
    assert state == "resolved"


def test_a_refused_or_rejected_approval_reaches_the_model(rt: Runtime, dsn: str) -> None:
    agent, model = approval_agent("human_refused")
    handle = rt.start(agent, "Deploy v2.", id="agent/run/h2")
    waiting_on(dsn, "agent/run/h2", "approvals/h2")
    done = promissory_cli(
        dsn, "resolve", "approvals/h2", "--value", '{"approved": false, "why": "Friday"}'
    )
    assert done.returncode == 0, done.stderr
    assert handle.result(timeout=30) == "Deployed v2."
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="request_approval", content="refused: Friday")
    ]

    agent, model = approval_agent("human_rejected")
    handle = rt.start(agent, "Deploy v2.", id="agent/run/h3")
    waiting_on(dsn, "agent/run/h3", "approvals/h3")
    done = promissory_cli(dsn, "reject", "approvals/h3", "--error", "nobody is on call")
    assert done.returncode == 0, done.stderr
    assert handle.result(timeout=30) == "Deployed v2."
    [result] = results_in(model.requests[1])
    # A durable tool's failure is an error result for the model, not a crash of the run.
    assert result.is_error and result.call_id == "c1"
    assert "nobody is on call" in result.content


def test_an_approval_given_while_no_runtime_runs_is_finished_by_a_new_runtime(dsn: str) -> None:
    agent, model = approval_agent("human_restart")
    first = Runtime(dsn).open()
    try:
        first.start(agent, "Deploy v2.", id="agent/run/h4")
        waiting_on(dsn, "agent/run/h4", "approvals/h4")
    finally:
        first.close()
    assert model.calls == 1
    [(state,)] = sql(dsn, "SELECT state FROM promises WHERE id = 'agent/run/h4'")
    assert state == "pending"

    done = promissory_cli(dsn, "resolve", "approvals/h4", "--value", '{"approved": true}')
    assert done.returncode == 0, done.stderr

    second = Runtime(dsn).open()
    try:
        assert second.store is not None
        handle = RunHandle("agent/run/h4", second.store)
        assert handle.result(timeout=30) == "Deployed v2."
        details = handle.details(timeout=1)
        assert (details.turns, details.stop) == (2, "final_answer")
    finally:
        second.close()
    assert model.calls == 2
    assert results_in(model.requests[1]) == [
        ToolResult(call_id="c1", name="request_approval", content="approved")
    ]
    steps: list[Any] = sql(
        dsn, "SELECT id, state FROM promises WHERE id LIKE 'agent/run/h4/%%' ORDER BY seq"
    )
    assert steps == [
        ("agent/run/h4/1", "resolved"),  # the first model turn
        ("agent/run/h4/2", "resolved"),  # the step recording which promise it waits on
        ("agent/run/h4/3", "resolved"),  # the second model turn
    ]
