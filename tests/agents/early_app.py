"""The scenario of the early call's crash tests: one run of an agent over a loopback provider
(``$EARLY_PROVIDER``, an OpenAI-compatible URL the test serves), whose first turn is asked
while the run commits (``promissory.agents._early``)."""

from __future__ import annotations

import os
from typing import Any

from promissory.agents import Agent, OpenAIChatModel, RunHandle
from promissory.runtime import Runtime

RUN = "early/crash"


def run(rt: Runtime) -> dict[str, Any]:
    """Start the run (or, when a killed process started it, wait for the recovered one);
    return its output and its kept model steps."""
    model = OpenAIChatModel("gpt-test", base_url=os.environ["EARLY_PROVIDER"], api_key="k")
    agent = Agent("early-crash", "Be brief.", model=model)
    store = rt.store
    assert store is not None
    handle = RunHandle(RUN, store) if store.find(RUN) else rt.start(agent, "hello", id=RUN)
    output = handle.result(timeout=60)
    steps = store.read(
        lambda conn: conn.execute(
            "SELECT id, state FROM promises WHERE kind = 'step' AND id LIKE %s ORDER BY id",
            (RUN + "/%",),
        ).fetchall()
    )
    return {"output": output, "steps": [list(s) for s in steps]}
