"""Interop both ways, on one database: a promissory actor awaits a promise made through the
protocol (by a Resonate worker, or by any HTTP client), and a Resonate function awaits a promise
that a promissory actor resolves. The node is a ``Runtime`` that also serves the protocol
(``Runtime(serve=...)``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.runtime import Runtime
from promissory.store import Store
from tests.cli.kit import Procs
from tests.kit import eventually, sql
from tests.protocol.conftest import App

pytestmark = pytest.mark.timeout(120)

STORE: list[Store] = []


class Await(msgspec.Struct):
    id: str


class Resolve(msgspec.Struct):
    id: str
    value: Any


def _resolve(id: str, value: Any) -> str:
    STORE[0].resolve(id, value)  # idempotent: a rerun after a crash changes nothing
    return id


class Bridge(DurableActor):
    @handler
    def wait(self, ctx: Context, msg: Await) -> Any:
        return ctx.promise(msg.id).result()

    @handler
    def resolve(self, ctx: Context, msg: Resolve) -> str:
        return str(ctx.step(_resolve, msg.id, msg.value))


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    with Runtime(dsn, suspend_after=0.02, serve=0) as rt:
        assert rt.store is not None
        STORE[:] = [rt.store]
        yield rt


def rpc(url: str, kind: str, data: Any) -> Any:
    head = {"corrId": "i", "version": "2026-04-01"}
    reply = httpx.post(url + "/", json={"kind": kind, "head": head, "data": data})
    assert reply.status_code < 300, reply.text
    return reply.json()["data"]


def test_an_actor_awaits_a_promise_an_http_client_made_and_settled(rt: Runtime) -> None:
    url = rt.protocol_url
    assert url is not None and url.startswith("http://127.0.0.1:")
    tags = {"resonate:external": "true"}
    rpc(url, "promise.create", {"id": "approval-1", "timeoutAt": 2**62, "tags": tags})
    reply = rt.spawn(Bridge, id="bridge").ask(Await("approval-1"))
    eventually(lambda: rt.host.suspended_count() == 1, what="the actor suspended on the promise")
    value = base64.b64encode(json.dumps({"approved": True}).encode()).decode()
    rpc(url, "promise.settle", {"id": "approval-1", "state": "resolved", "value": {"data": value}})
    assert reply.get(timeout=10) == {"approved": True}


def test_an_actor_awaits_the_result_of_a_resonate_function(
    rt: Runtime, dsn: str, resonate_python: str, procs: Procs, tmp_path: Path
) -> None:
    app = App(resonate_python, str(rt.protocol_url), procs, tmp_path / "app.log")
    run = app.start("run", "default", "sum1", "steps", "[4]")
    # The actor awaits the function's own promise, once the worker has made it.
    eventually(lambda: sql(dsn, "SELECT count(*) FROM rpc_tasks") == [(1,)], timeout=30)
    reply = rt.spawn(Bridge, id="bridge").ask(Await("sum1"))
    run.wait_for_line(r"^RESULT 6$", timeout=60)
    assert reply.get(timeout=10) == 6
    assert sql(dsn, "SELECT state, value FROM promises WHERE id = 'sum1'") == [("resolved", 6)]


def test_a_resonate_function_awaits_a_promise_an_actor_resolves(
    rt: Runtime, dsn: str, resonate_python: str, procs: Procs, tmp_path: Path
) -> None:
    app = App(resonate_python, str(rt.protocol_url), procs, tmp_path / "app.log")
    run = app.start("run", "default", "ask1", "approval", "[5]")
    eventually(
        lambda: sql(dsn, "SELECT state FROM rpc_tasks WHERE id = 'ask1'") == [("suspended",)],
        timeout=30,
        what="the Resonate function suspended on its promise",
    )
    done = rt.spawn(Bridge, id="bridge").ask(Resolve("ask1:1", {"by": "an actor"}))
    assert done.get(timeout=10) == "ask1:1"
    match = run.wait_for_line(r"^RESULT (.*)$", timeout=60)
    assert json.loads(match.group(1)) == {"x": 5, "decision": {"by": "an actor"}}
