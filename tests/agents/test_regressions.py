"""Regressions: each test pins a bug found while writing the agent suite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from promissory.agents import (
    Agent,
    AnthropicModel,
    Message,
    ModelRequest,
    ScriptedModel,
    call,
    reply,
)
from promissory.errors import ModelError
from promissory.runtime import Runtime
from promissory.testing import CrashTest, fresh_schema
from tests.actors.kit import sql
from tests.kit import eventually

from .fake_llm import FakeProvider, anthropic_error


def test_anthropic_prompt_too_long_is_context_length(fake: FakeProvider) -> None:
    # Anthropic's own wording for a prompt over the context window; it has no "context" in it.
    fake.answer(anthropic_error("prompt is too long: 210000 tokens > 200000 maximum"), status=400)
    model = AnthropicModel("claude-test", base_url=fake.anthropic_url, api_key="test")
    request = ModelRequest(system="", messages=[Message.user("hi")])
    with pytest.raises(ModelError) as info:
        asyncio.run(model.complete(request))
    assert info.value.kind == "context_length"  # observed: "bad_request"


def test_parallel_steps_are_listed_in_position_order_by_created_at(rt: Runtime, dsn: str) -> None:
    def slow() -> str:
        """Slow."""
        time.sleep(0.2)
        return "s"

    def fast() -> str:
        """Fast."""
        return "f"

    model = ScriptedModel([reply("", call("slow", "c1"), call("fast", "c2")), "done"])
    rt.run(Agent("bug_order", "", model, tools=[slow, fast]), "x", id="agent/run/order", timeout=30)
    rows = sql(
        dsn,
        "SELECT id FROM promises WHERE id LIKE 'agent/run/order/%%' ORDER BY created_at",
    )
    # observed: /1, /3, /2, /4 (the order the steps finished in)
    assert [r[0] for r in rows] == [f"agent/run/order/{n}" for n in (1, 2, 3, 4)]


def test_starting_a_finished_run_again_does_not_revive_its_actor(rt: Runtime, dsn: str) -> None:
    agent = Agent("bug_revive", "", ScriptedModel(["done"]))
    assert rt.run(agent, "x", id="agent/run/revive", timeout=30) == "done"
    eventually(
        lambda: (
            sql(dsn, "SELECT status FROM actors WHERE id = 'agent/run/revive'") == [("stopped",)]
        ),
        what="the run's actor ended",
    )
    # The id is the idempotency key: starting it again only finds the finished run (a spawn
    # that brought the actor back would have made it 'running' before run returned).
    assert rt.run(agent, "x", id="agent/run/revive", timeout=30) == "done"
    # observed: 'running' (spawn brought the stopped actor back; nothing will ever end it)
    assert sql(dsn, "SELECT status FROM actors WHERE id = 'agent/run/revive'") == [("stopped",)]


@pytest.mark.timeout(120)
def test_a_crash_just_after_a_runs_reply_still_ends_its_actor(
    server_dsn: str, tmp_path: Path
) -> None:
    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, "tests.agents.scenarios:research", workdir=tmp_path)
        killed = test.run(crash_at="message.settled:3")  # the lead's reply
        assert killed.killed
        final = test.run()
        statuses: dict[str, Any] = final.outcome["statuses"]
        # observed: {'agent/run/crash': 'running', ...} (and sometimes the critic too)
        assert set(statuses.values()) == {"stopped"}, statuses
