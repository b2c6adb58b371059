"""The web view in a real browser: the system's headless Chromium, driven by Playwright.

Each test starts ``promissory ui`` (a subprocess, on the test's schema) and the processes it
looks at: a running demo, a node whose agent waits for an approval. Set
``$PROMISSORY_UI_SCREENSHOTS`` to a directory to keep the screenshots (the README's, in docs/,
are made so).
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from promissory import Runtime
from promissory.agents import Agent, ScriptedModel, call, reply, tool
from tests.agents.fake_llm import Answer, FakeProvider, Recorded, openai_answer
from tests.cli.kit import Procs, eventually, promissory_args, sql

from .approval_app import APPROVAL, RUN
from .conftest import View, screenshot

pytestmark = pytest.mark.timeout(240)


class GatedRoles:
    """Answers the demo's roles as a model would; the researchers' answers wait for ``open``."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.held = 0
        self._lock = threading.Lock()

    def __call__(self, request: Recorded) -> Answer:
        body = request.body
        system = body["messages"][0]["content"]
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if "lead a research team" in system:
            if turn == 0:
                calls = [
                    (f"ask-{name}", name, json.dumps({"input": f"Research {name}."}))
                    for name in ("scout", "flaky", "broken")
                ]
                return Answer(body=openai_answer("Asking all three.", calls))
            found = [m["content"] for m in body["messages"] if m["role"] == "tool"]
            return Answer(body=openai_answer("Summary: " + " | ".join(found)))
        with self._lock:
            self.held += 1
        self.open.wait(60)
        if turn == 0:
            return Answer(
                body=openai_answer(None, [("s1", "search", '{"topic": "durable actors"}')])
            )
        result = [m["content"] for m in body["messages"] if m["role"] == "tool"][-1]
        return Answer(body=openai_answer(f"summary of {result[:40]}"))


def main_text(page: Any) -> str:
    return str(page.locator("main").inner_text())


def test_the_forest_of_a_running_demo_and_its_run_growing_live(
    page: Any, view: View, procs: Procs, dsn: str, env: dict[str, str], tmp_path: Path
) -> None:
    roles = GatedRoles()
    fake = FakeProvider()
    try:
        for _ in range(20):
            fake.answer_with(roles)
        demo_env = dict(env, OPENAI_API_KEY="sk-loopback")
        demo = procs.start(
            promissory_args(dsn, "demo", "--model", f"{fake.openai_url}#fake-model"), demo_env
        )
        run_id = demo.wait_for_line(r"^Starting (demo/\S+): ").group(1)
        eventually(lambda: roles.held >= 2, timeout=30)  # scout and flaky wait on the model
        broken = f"{run_id}/t1-2-broken"
        eventually(
            lambda: sql(dsn, "SELECT status FROM actors WHERE id = %s", broken) == [("failed",)],
            timeout=30,
        )

        def forest_rows() -> dict[str, str]:
            page.goto(view.url)
            return {
                row.locator("td").nth(0).inner_text().strip(" ·"): row.locator("td")
                .nth(2)
                .inner_text()
                for row in page.locator("table.forest tbody tr").all()
            }

        # The lead handles its broken child's exits (running) before it waits again on the others.
        eventually(lambda: forest_rows().get(run_id) == "waiting", timeout=30)
        rows = forest_rows()
        assert page.title() == "forest · promissory"
        forest = main_text(page)
        assert run_id in forest
        for child in ("/t1-0-scout", "/t1-1-flaky", "/t1-2-broken"):
            assert child in forest
        assert rows[run_id] == "waiting"  # the lead waits on its sub-agents
        assert rows["/t1-2-broken"] == "failed"  # given up after its two restarts
        assert page.locator("#live.on").count() == 1  # following the store
        screenshot(page, "ui-forest", tmp_path)

        page.click(f"text={run_id}")
        page.wait_for_url(re.compile(r"/run/demo/"))
        assert page.locator("table.facts .state").first.inner_text() == "pending"
        before = page.locator("ol.transcript > li").count()
        page.evaluate("window.__same_page = 1")

        roles.open.set()  # the researchers get their answers: the run goes on, and ends

        expect(page.locator("table.facts .state").first).to_have_text("resolved", timeout=60_000)
        after = page.locator("ol.transcript > li").count()
        assert after > before, "the transcript grew"
        assert page.evaluate("window.__same_page") == 1, "without a reload"
        assert "Summary: " in main_text(page)
        assert page.locator(".waterfall .wf-row").count() > 10
        screenshot(page, "ui-run", tmp_path)
        assert demo.wait(60) == 0, demo.stderr
    finally:
        roles.open.set()
        fake.close()


def test_approving_from_the_page_lets_the_waiting_agent_finish(
    page: Any, view: View, procs: Procs, dsn: str, tmp_path: Path
) -> None:
    node = procs.start(promissory_args(dsn, "run", "tests.ui.approval_app:setup"))
    node.wait_for_line(r"^promissory node \S+ serving")
    eventually(lambda: sql(dsn, "SELECT 1 FROM promises WHERE id = %s", APPROVAL), timeout=30)
    # Its progress line says what the run waits on.
    eventually(lambda: f"waits on promise {APPROVAL}" in node.stderr, timeout=30)

    page.goto(view.url)
    page.goto(view.at("/approvals"))
    row = page.locator("table.approvals tbody tr", has_text=APPROVAL)
    assert row.count() == 1
    assert RUN in row.inner_text()  # the run that waits on it
    screenshot(page, "ui-approvals", tmp_path)

    page.goto(view.at(f"/run/{RUN}"))
    waiting = page.locator("li.k-promise", has_text=APPROVAL)
    assert "pending" in waiting.inner_text()
    page.evaluate("window.__same_page = 1")
    waiting.locator("button.approve").click()

    page.wait_for_url(re.compile(r"note="))
    assert f"{APPROVAL}: resolved" in page.locator(".note").inner_text()
    expect(page.locator("table.facts .state").first).to_have_text("resolved", timeout=30_000)
    assert "Paid 250." in main_text(page)
    assert sql(dsn, "SELECT state, value FROM promises WHERE id = %s", RUN)[0][0] == "resolved"
    assert sql(dsn, "SELECT value FROM promises WHERE id = %s", APPROVAL) == [(True,)]
    eventually(lambda: f"run {RUN} (ui-clerk) finished" in node.stderr, timeout=30)
    page.goto(view.at(f"/promise/{APPROVAL}"))
    screenshot(page, "ui-promise", tmp_path)


EVIL = '<script>window.__pwned = 1; alert("pwned")</script><img src=x onerror="window.__pwned=2">'


def test_a_model_output_with_a_script_is_shown_as_text(page: Any, view: View, dsn: str) -> None:
    agent = Agent("ui-evil", "Say it.", ScriptedModel([EVIL]))
    with Runtime(dsn) as rt:
        assert rt.run(agent, EVIL, id="evil/run", timeout=30) == EVIL

    page.goto(view.url)
    page.goto(view.at("/run/evil/run"))
    shown = page.locator("ol.transcript").inner_text()
    assert EVIL in shown  # as text, in the transcript: the input and the model's answer
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_a_request_without_the_token_is_refused(page: Any, view: View) -> None:
    for path in ("/", "/approvals", "/run/x", "/events", "/static/app.js"):
        response = page.goto(view.at(path))
        assert response.status == 403, path
    assert "a token is required" in page.content()
    response = page.goto(view.at("/?token=not-the-token"))
    assert response.status == 403
    response = page.goto(view.url)
    assert response.status == 200
    assert page.goto(view.at("/approvals")).status == 200  # the cookie carries it now


@tool
def count(i: int) -> int:
    """Count.

    Args:
        i: the number.
    """
    return i


STEPS = 1000


def test_the_page_of_a_run_of_1000_steps_renders_quickly(
    page: Any, view: View, dsn: str, record_property: Any, tmp_path: Path
) -> None:
    turns = STEPS // 2
    script: list[Any] = [reply("", call("count", f"c{i}", i=i)) for i in range(turns)]
    agent = Agent("ui-counter", "Count.", ScriptedModel([*script, "done"]), tools=[count])
    with Runtime(dsn) as rt:
        assert rt.run(agent, "count", id="big/run", timeout=600) == "done"
    steps = sql(dsn, "SELECT count(*) FROM promises WHERE id LIKE 'big/run/%%'")[0][0]
    assert steps == STEPS + 1  # and the final answer's model call

    page.goto(view.url)
    timings = []
    for _ in range(3):
        page.goto(view.at("/run/big/run"), wait_until="load")
        nav = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {server: n.responseEnd - n.requestStart, dom: n.domContentLoadedEventEnd,"
            " load: n.loadEventEnd}; })()"
        )
        timings.append(nav)
    assert page.locator(".waterfall .wf-row").count() == steps + 2  # and the run, and a head
    best = min(timings, key=lambda t: t["load"])
    record_property("run_page_1000_steps_ms", best)
    line = (
        f"run page of {steps} steps: loaded in {best['load']:.0f} ms "
        f"(server {best['server']:.0f} ms, DOM ready {best['dom']:.0f} ms); "
        f"all three: {[round(t['load']) for t in timings]} ms"
    )
    print("\n" + line)
    out = os.environ.get("PROMISSORY_UI_TIMING")
    if out:
        Path(out).write_text(line + "\n")
