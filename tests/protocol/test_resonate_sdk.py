"""Conformance with the real client: Resonate's Python SDK (resonate-sdk 0.8.1) runs durable
functions against ``promissory serve`` over HTTP and server-sent events, and each finishes with
the result a clean run gives.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.kit import Procs, promissory_args
from tests.kit import eventually, sql
from tests.protocol.conftest import App

pytestmark = pytest.mark.timeout(180)


def result(proc: object, timeout: float = 90.0) -> object:
    match = proc.wait_for_line(r"^RESULT (.*)$", timeout=timeout)  # type: ignore[attr-defined]
    return json.loads(match.group(1))


def test_a_function_of_run_steps_finishes_and_keeps_each_step(app: App, dsn: str) -> None:
    assert result(app.start("run", "default", "steps1", "steps", "[5]")) == 10
    assert app.lines() == [f"add {i}" for i in range(5)]
    rows = sql(dsn, "SELECT id, state, value FROM promises ORDER BY seq")
    assert rows[0] == ("steps1", "resolved", 10)
    assert [r[0] for r in rows[1:]] == [f"steps1:{i}" for i in range(1, 6)]
    assert sql(dsn, "SELECT state FROM rpc_tasks") == [("fulfilled",)]


def test_a_durable_sleep_wakes_the_function(app: App, dsn: str) -> None:
    started = time.monotonic()
    assert result(app.start("run", "default", "nap1", "sleeper", "[1.5]")) == "woke 3"
    assert time.monotonic() - started >= 1.5
    timers = sql(dsn, "SELECT kind, state FROM promises WHERE tags->>'resonate:timer' = 'true'")
    assert timers == [("timer", "resolved")]


def test_a_promise_resolved_from_outside_resumes_the_function(app: App, dsn: str) -> None:
    proc = app.start("run", "default", "ok1", "approval", "[3]")
    eventually(
        lambda: sql(dsn, "SELECT state FROM rpc_tasks WHERE id = 'ok1'") == [("suspended",)],
        what="the function suspended on its promise",
    )
    value = base64.b64encode(b'"approved"').decode()
    reply = httpx.post(
        app.url + "/",
        json={
            "kind": "promise.settle",
            "head": {"corrId": "x", "version": "2026-04-01"},
            "data": {"id": "ok1:1", "state": "resolved", "value": {"data": value}},
        },
    )
    assert reply.status_code == 200
    assert result(proc) == {"x": 3, "decision": "approved"}


def test_an_rpc_runs_on_a_second_worker(app: App, dsn: str) -> None:
    app.worker("second", APP_NAME="second")
    got = result(app.start("run", "default", "call1", "caller", "[7]"))
    assert got == "caller got [callee saw 7]"
    assert app.lines() == ["callee 7 on second"]


def test_a_worker_killed_mid_function_has_its_task_redispatched(app: App, dsn: str) -> None:
    first = app.worker("crash", APP_NAME="A", APP_SLOW="1", APP_TTL="2")
    proc = app.start("rpc", "client", "crash1", "crashy", "crash", "[3]")
    eventually(lambda: "slow 1 on A" in app.lines(), timeout=30, what="A in the slow step")
    first.kill()  # SIGKILL, mid-step
    app.worker("crash", APP_NAME="B", APP_TTL="2")
    assert result(proc) == 22  # what a clean run gives: 0 + 10 + (10 + 2)
    # Kept steps were not run again; the step that was running when A died ran again on B.
    assert app.lines() == ["add 0", "slow 1 on A", "slow 1 on B", "add 2"]
    assert sql(dsn, "SELECT state, version > 0 FROM rpc_tasks WHERE id = 'crash1'") == [
        ("fulfilled", True)
    ]


def test_the_sdk_runs_against_a_node_that_requires_a_token(
    resonate_python: str, dsn: str, procs: Procs, tmp_path: Path
) -> None:
    node = procs.start(promissory_args(dsn, "serve", "--port", "0", "--token", "s3cret"))
    url = node.wait_for_line(r"promissory serve: (http://\S+)").group(1)
    app = App(resonate_python, url, procs, tmp_path / "app.log")
    assert result(app.start("run", "default", "tok1", "steps", "[3]", APP_TOKEN="s3cret")) == 3
    refused = app.start("run", "default", "tok2", "steps", "[3]", APP_TOKEN="wrong")
    # The SDK retries for ever; what matters is that the node refused it and kept nothing.
    eventually(
        lambda: "code=401" in refused.stderr and "SSE endpoint returned 401" in refused.stderr,
        timeout=30,
        what="its requests and its poll stream refused",
    )
    assert "RESULT" not in refused.stdout
    refused.kill()
    assert sql(dsn, "SELECT count(*) FROM promises WHERE id LIKE %s", "tok2%") == [(0,)]


def test_running_an_id_again_returns_the_kept_result_and_runs_nothing(app: App, dsn: str) -> None:
    assert result(app.start("run", "default", "again1", "steps", "[3]")) == 3
    assert result(app.start("run", "default", "again1", "steps", "[3]")) == 3
    assert app.lines() == ["add 0", "add 1", "add 2"]


def test_a_second_caller_of_a_running_id_waits_for_its_result(app: App, dsn: str) -> None:
    # The first run's task is suspended on its promise; the second's task.create conflicts
    # (409), so it listens on the function's promise and is unblocked when the first finishes.
    first = app.start("run", "default", "twice1", "approval", "[1]")
    eventually(
        lambda: sql(dsn, "SELECT state FROM rpc_tasks WHERE id = 'twice1'") == [("suspended",)],
        what="the first run suspended on its promise",
    )
    second = app.start("run", "default", "twice1", "approval", "[1]")
    eventually(
        lambda: sql(dsn, "SELECT count(*) FROM rpc_listeners WHERE awaited = 'twice1'")[0][0] >= 1,
        what="the second caller listening",
    )
    value = base64.b64encode(b'"yes"').decode()
    httpx.post(
        app.url + "/",
        json={
            "kind": "promise.settle",
            "head": {"corrId": "x", "version": "2026-04-01"},
            "data": {"id": "twice1:1", "state": "resolved", "value": {"data": value}},
        },
    )
    assert result(first) == result(second) == {"x": 1, "decision": "yes"}
