"""The protocol over HTTP: the status is the HTTP status, the poll streams carry execute and
unblock messages to one worker (unicast) or one of a group (anycast), the legacy REST paths
are gone, and a token guards both ``POST /`` and ``/poll``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promissory.errors import ServeError
from promissory.protocol import TOKEN_ENV, ProtocolServer
from promissory.protocol._serving import check_address
from tests.kit import eventually, sql


def later(ms: int = 60_000) -> int:
    """A ``timeoutAt`` ``ms`` from now (computed when the test runs, not when it was collected)."""
    return int(time.time() * 1000) + ms


def env(kind: str, data: Any, **head: Any) -> dict[str, Any]:
    return {"kind": kind, "head": {"corrId": "h", "version": "2026-04-01", **head}, "data": data}


@pytest.fixture
def server(dsn: str) -> Iterator[ProtocolServer]:
    with ProtocolServer(dsn, port=0) as srv:
        yield srv


class Listener:
    """A poll stream read in a thread: its ``data:`` messages land in ``messages``."""

    def __init__(self, url: str, group: str, pid: str, token: str | None = None) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.status: int | None = None
        self._ready = threading.Event()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._thread = threading.Thread(
            target=self._read, args=(f"{url}/poll/{group}/{pid}", headers), daemon=True
        )
        self._thread.start()
        assert self._ready.wait(10), "the poll stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=None) as resp:
                self.status = resp.status_code
                self._ready.set()
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        self.messages.put(json.loads(line[6:]))
        except httpx.HTTPError:
            self._ready.set()

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.messages.get(timeout=timeout)

    def nothing(self, wait: float = 0.5) -> bool:
        try:
            got = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message {got}")


def post(server: ProtocolServer, kind: str, data: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.url + "/", json=env(kind, data), timeout=10, **kw)


def test_the_http_status_is_the_envelopes_status(server: ProtocolServer) -> None:
    missing = post(server, "promise.get", {"id": "nope"})
    assert missing.status_code == missing.json()["head"]["status"] == 404
    made = post(server, "promise.create", {"id": "p", "timeoutAt": later()})
    assert made.status_code == 201
    again = post(server, "promise.create", {"id": "p", "timeoutAt": later()})
    assert again.status_code == 200
    bad = httpx.post(server.url + "/", content=b"not json", timeout=10)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/promises"),
        ("POST", "/promises"),
        ("PATCH", "/promises/p1"),
        ("GET", "/schedules/s"),
        ("POST", "/tasks/claim"),
        ("POST", "/locks/acquire"),
    ],
)
def test_the_legacy_rest_paths_are_gone(server: ProtocolServer, method: str, path: str) -> None:
    resp = httpx.request(method, server.url + path, timeout=10)
    assert resp.status_code == 410
    assert "no longer supported" in resp.json()["error"]


def test_health_and_ready_answer(server: ProtocolServer) -> None:
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert httpx.get(server.url + "/ready", timeout=10).json() == {"status": "ready"}


def test_a_token_guards_the_envelopes_and_the_poll_streams(dsn: str) -> None:
    with ProtocolServer(dsn, port=0, token="s3cret") as srv:
        data = {"id": "p"}
        assert post(srv, "promise.get", data).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert post(srv, "promise.get", data, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert post(srv, "promise.get", data, headers=right).status_code == 404
        in_head = httpx.post(srv.url + "/", json=env("promise.get", data, auth="s3cret"))
        assert in_head.status_code == 404
        assert httpx.get(srv.url + "/poll/g/w", timeout=10).status_code == 401
        stream = Listener(srv.url, "g", "w", token="s3cret")
        assert stream.status == 200


def test_only_a_loopback_address_serves_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert check_address("127.0.0.1", None) is None
    assert check_address("::1", None) is None
    with pytest.raises(ServeError, match="not a loopback address, without a token"):
        check_address("0.0.0.0", None)
    assert check_address("0.0.0.0", "t") == "t"
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert check_address("0.0.0.0", None) == "from-env"


def test_unicast_reaches_its_worker_only(server: ProtocolServer) -> None:
    a, b = Listener(server.url, "g", "a"), Listener(server.url, "g", "b")
    tags = {"resonate:target": "poll://uni@g/b"}
    post(server, "promise.create", {"id": "u", "timeoutAt": later(), "tags": tags})
    assert b.next() == {"kind": "execute", "data": {"task": {"id": "u", "version": 0}}}
    assert a.nothing()


def test_anycast_reaches_one_worker_of_the_group(server: ProtocolServer, dsn: str) -> None:
    a, b = Listener(server.url, "g", "a"), Listener(server.url, "g", "b")
    other = Listener(server.url, "h", "c")
    tags = {"resonate:target": "poll://any@g"}
    for i in range(6):
        post(server, "promise.create", {"id": f"any{i}", "timeoutAt": later(), "tags": tags})
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 6 and time.monotonic() < deadline:
        for listener in (a, b):
            try:
                got.append(listener.messages.get(timeout=0.05)["data"]["task"]["id"])
            except queue.Empty:
                pass
    assert sorted(got) == [f"any{i}" for i in range(6)]  # each once, to one of them
    assert a.nothing(0.2) and b.nothing(0.2) and other.nothing(0.2)
    assert sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(0,)]


def test_a_message_waits_for_its_worker_to_connect(server: ProtocolServer, dsn: str) -> None:
    tags = {"resonate:target": "poll://uni@g/late"}
    post(server, "promise.create", {"id": "w", "timeoutAt": later(), "tags": tags})
    time.sleep(0.3)
    assert sql(dsn, "SELECT kind, ref FROM rpc_outbox") == [("execute", "w")]
    late = Listener(server.url, "g", "late")
    assert late.next()["data"]["task"]["id"] == "w"


def test_a_listener_is_unblocked_with_the_settled_promise(server: ProtocolServer) -> None:
    a = Listener(server.url, "g", "a")
    tags = {"resonate:external": "true"}
    post(server, "promise.create", {"id": "ext", "timeoutAt": later(), "tags": tags})
    reg = post(server, "promise.register_listener", {"awaited": "ext", "address": "poll://uni@g/a"})
    assert reg.status_code == 200
    post(server, "promise.settle", {"id": "ext", "state": "resolved", "value": {"data": "MQ=="}})
    message = a.next()
    assert message["kind"] == "unblock"
    assert message["data"]["promise"]["state"] == "resolved"
    assert message["data"]["promise"]["value"] == {"data": "MQ=="}


def test_an_expired_lease_sends_the_task_again_at_the_next_version(
    server: ProtocolServer, dsn: str
) -> None:
    a = Listener(server.url, "g", "a")
    create = {
        "kind": "promise.create",
        "head": {},
        "data": {
            "id": "job",
            "timeoutAt": later(),
            "tags": {"resonate:target": "poll://any@g"},
        },
    }
    made = post(server, "task.create", {"pid": "dead", "ttl": 300, "action": create})
    assert made.json()["data"]["task"] == {
        "id": "job",
        "state": "acquired",
        "version": 0,
        "pid": "dead",
        "ttl": 300,
    }
    assert a.next()["data"]["task"] == {"id": "job", "version": 1}
    # The old holder is fenced off; the new version can be acquired.
    settle = {"kind": "promise.settle", "head": {}, "data": {"id": "job", "state": "resolved"}}
    stale = post(server, "task.fulfill", {"id": "job", "version": 0, "action": settle})
    assert stale.status_code == 409
    acquired = post(server, "task.acquire", {"id": "job", "version": 1, "pid": "new", "ttl": 5000})
    assert acquired.status_code == 200
    assert (
        post(server, "task.fulfill", {"id": "job", "version": 1, "action": settle}).status_code
        == 200
    )
    assert sql(dsn, "SELECT state FROM rpc_tasks WHERE id = 'job'") == [("fulfilled",)]


def test_timeouts_are_armed_for_external_promises_only(server: ProtocolServer, dsn: str) -> None:
    # Far enough ahead that all three are made before it passes, however slow the requests.
    soon = int(time.time() * 1000) + 2000
    post(
        server,
        "promise.create",
        {"id": "int", "timeoutAt": soon, "tags": {"resonate:scope": "local"}},
    )
    post(
        server,
        "promise.create",
        {"id": "ext", "timeoutAt": soon, "tags": {"resonate:external": "true"}},
    )
    post(
        server,
        "promise.create",
        {"id": "nap", "timeoutAt": soon, "tags": {"resonate:timer": "true"}},
    )
    raw = "SELECT id, state FROM promises ORDER BY id"
    eventually(
        lambda: (
            sql(dsn, raw) == [("ext", "rejected_timedout"), ("int", "pending"), ("nap", "resolved")]
        ),
        what="the external promises settled by the server, the internal one left",
    )
    # The internal one reads as timed out all the same (projection on read).
    got = post(server, "promise.get", {"id": "int"}).json()["data"]["promise"]
    assert got["state"] == "rejected_timedout" and got["settledAt"] == soon


def test_any_node_answers_and_a_lease_outlives_the_node_that_granted_it(dsn: str) -> None:
    with ProtocolServer(dsn, port=0) as b:
        worker = Listener(b.url, "g", "w")
        with ProtocolServer(dsn, port=0) as a:
            # Made through node A; the worker listens on node B: B delivers it.
            tags = {"resonate:target": "poll://any@g"}
            post(a, "promise.create", {"id": "job", "timeoutAt": later(), "tags": tags})
            assert worker.next()["data"]["task"] == {"id": "job", "version": 0}
            got = post(a, "task.acquire", {"id": "job", "version": 0, "pid": "w", "ttl": 300})
            assert got.status_code == 200
        # A is gone; the lease it granted expires all the same, and B sends the task again.
        assert worker.next()["data"]["task"] == {"id": "job", "version": 1}
        assert post(b, "task.get", {"id": "job"}).json()["data"]["task"]["state"] == "pending"


def test_a_schedule_fires_a_promise_with_its_task(server: ProtocolServer, dsn: str) -> None:
    worker = Listener(server.url, "g", "w")
    data = {
        "id": "nightly",
        "cron": "0 3 * * *",
        "promiseId": "nightly.{{.timestamp}}",
        "promiseTimeout": 60_000,
        "promiseTags": {"resonate:target": "poll://any@g"},
    }
    assert post(server, "schedule.create", data).status_code == 201
    sql(dsn, "UPDATE rpc_schedules SET next_run_at = now() - interval '1 minute' RETURNING 1")
    fired = worker.next()["data"]["task"]["id"]
    assert fired.startswith("nightly.")
    tags = sql(dsn, "SELECT tags->>'resonate:schedule' FROM promises WHERE id = %s", fired)
    assert tags == [("nightly",)]
    schedule = post(server, "schedule.get", {"id": "nightly"}).json()["data"]["schedule"]
    assert schedule["lastRunAt"] is not None and schedule["nextRunAt"] > later(0)


def test_an_http_target_is_posted_its_execute_message(server: ProtocolServer) -> None:
    import http.server

    got: queue.Queue[bytes] = queue.Queue()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.put(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        target = f"http://127.0.0.1:{hook.server_address[1]}/hook"
        tags = {"resonate:target": target}
        post(server, "promise.create", {"id": "h", "timeoutAt": later(), "tags": tags})
        assert json.loads(got.get(timeout=10)) == {
            "kind": "execute",
            "data": {"task": {"id": "h", "version": 0}},
        }
    finally:
        hook.shutdown()


def test_a_refused_request_leaves_nothing_half_written(server: ProtocolServer, dsn: str) -> None:
    create = {
        "kind": "promise.create",
        "head": {},
        "data": {
            "id": "wf",
            "timeoutAt": later(),
            "tags": {"resonate:target": "poll://any@g"},
        },
    }
    post(server, "task.create", {"pid": "w", "ttl": 60_000, "action": create})
    ext = {"resonate:external": "true"}
    post(server, "promise.create", {"id": "wf:1", "timeoutAt": later(), "tags": ext})
    local = {"resonate:scope": "local"}
    post(server, "promise.create", {"id": "wf:2", "timeoutAt": later(), "tags": local})
    actions = [
        {"kind": "promise.register_callback", "head": {}, "data": {"awaited": a, "awaiter": "wf"}}
        for a in ("wf:1", "wf:2")
    ]
    refused = post(server, "task.suspend", {"id": "wf", "version": 0, "actions": actions})
    assert refused.status_code == 422
    assert sql(dsn, "SELECT count(*) FROM rpc_callbacks") == [(0,)]
    assert sql(dsn, "SELECT state FROM rpc_tasks WHERE id = 'wf'") == [("acquired",)]
    bad = {"id": "x", "timeoutAt": later(), "tags": {"resonate:target": "nowhere"}}
    assert post(server, "promise.create", bad).status_code == 400
    assert sql(dsn, "SELECT count(*) FROM promises WHERE id = 'x'") == [(0,)]


def test_a_push_message_no_worker_takes_is_dropped_after_an_hour(
    server: ProtocolServer, dsn: str
) -> None:
    tags = {"resonate:target": "poll://uni@g/never"}
    post(server, "promise.create", {"id": "lost", "timeoutAt": later(), "tags": tags})
    assert sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(1,)]
    sql(dsn, "UPDATE rpc_outbox SET created_at = now() - interval '61 minutes' RETURNING 1")
    eventually(lambda: sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(0,)], what="dropped")


class Hook:
    """An HTTP address that answers posts with the statuses it is given, in turn (200 once
    they run out); what it was posted lands in ``got``."""

    def __init__(self, port: int = 0, answers: tuple[tuple[int, dict[str, str]], ...] = ()) -> None:
        import http.server

        self.got: queue.Queue[tuple[int, bytes]] = queue.Queue()
        self.answers = list(answers)
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, headers = hook.answers.pop(0) if hook.answers else (200, {})
                hook.got.put((status, body))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failed_post_to_an_http_target_is_tried_again_until_it_gets_through(
    server: ProtocolServer, dsn: str
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = f"http://127.0.0.1:{port}/hook"
    post(
        server,
        "promise.create",
        {"id": "h", "timeoutAt": later(), "tags": {"resonate:target": target}},
    )
    # Refused: the message waits in the outbox, counting the attempt, for its backoff.
    eventually(
        lambda: sql(dsn, "SELECT attempts, due_at > now() FROM rpc_outbox") == [(1, True)],
        what="put back after the refused connection",
    )
    hook = Hook(port, answers=((503, {"Retry-After": "1"}), (500, {})))
    try:
        statuses = [hook.got.get(timeout=15)[0] for _ in range(3)]
        assert statuses == [503, 500, 200]
        eventually(lambda: sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(0,)], what="sent")
    finally:
        hook.close()


def test_an_unblock_for_an_http_address_is_tried_again_and_a_refusal_drops_it(
    server: ProtocolServer, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook = Hook(answers=((502, {}),))
    refusing = Hook(answers=((404, {}),))
    try:
        ext = {"resonate:external": "true"}
        post(server, "promise.create", {"id": "ext", "timeoutAt": later(), "tags": ext})
        for h in (hook, refusing):
            address = f"http://127.0.0.1:{h.port}/hook"
            reg = post(server, "promise.register_listener", {"awaited": "ext", "address": address})
            assert reg.status_code == 200
        post(
            server, "promise.settle", {"id": "ext", "state": "resolved", "value": {"data": "MQ=="}}
        )
        first, second = hook.got.get(timeout=10), hook.got.get(timeout=10)
        assert first[0] == 502 and second[0] == 200
        assert json.loads(second[1])["kind"] == "unblock"
        assert json.loads(second[1])["data"]["promise"]["id"] == "ext"
        assert refusing.got.get(timeout=10)[0] == 404
        eventually(lambda: sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(0,)], what="done")
        assert refusing.got.empty(), "a refused message is not posted again"
        assert "refused the unblock message for ext (HTTP 404)" in caplog.text
    finally:
        hook.close()
        refusing.close()


def test_a_poll_stream_past_the_nodes_limit_is_answered_503_and_a_freed_place_is_taken(
    dsn: str,
) -> None:
    with ProtocolServer(dsn, port=0, max_streams=2) as srv:
        first, second = Listener(srv.url, "g", "a"), Listener(srv.url, "g", "b")
        assert first.status == second.status == 200
        refused = httpx.get(f"{srv.url}/poll/g/c", timeout=10)
        assert refused.status_code == 503
        assert refused.json() == {"error": "too many poll streams"}
        # Both streams still get their messages: the refusal took nothing from them.
        tags = {"resonate:target": "poll://uni@g/b"}
        post(srv, "promise.create", {"id": "for-b", "timeoutAt": later(), "tags": tags})
        assert second.next()["data"]["task"]["id"] == "for-b"


@pytest.mark.parametrize("kind", ["task.search", "promise.search"])
def test_a_search_pages_through_everything_once_in_id_order(
    server: ProtocolServer, kind: str
) -> None:
    tags = {"resonate:target": "poll://any@nobody"}
    ids = [f"p{i:02d}" for i in range(7)]
    for id in ids:
        post(server, "promise.create", {"id": id, "timeoutAt": later(), "tags": tags})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        data: dict[str, Any] = {"limit": 3}
        if kind == "promise.search":
            data["id"] = "p*"
        if cursor is not None:
            data["cursor"] = cursor
        reply = post(server, kind, data)
        assert reply.status_code == 200, reply.text
        body = reply.json()["data"]
        items = body["tasks"] if kind == "task.search" else body["promises"]
        assert len(items) <= 3
        seen += [item["id"] for item in items]
        pages += 1
        cursor = body.get("cursor")
        if not cursor:
            break
    assert seen == ids and pages == 3


def test_a_message_taken_by_a_node_that_dies_before_handing_it_over_is_taken_again(
    dsn: str,
) -> None:
    import asyncio

    from promissory.store import RpcStore, Store

    Store(dsn).close()
    sql(
        dsn,
        "INSERT INTO rpc_outbox (route, kind, ref, version) VALUES "
        "('http:http://127.0.0.1:9/hook', 'execute', 'job', 0) RETURNING 1",
    )

    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        first, second = RpcStore(dsn, pool_size=1), RpcStore(dsn, pool_size=1)
        await first.open()
        await second.open()
        try:
            taken = await first.take(["http:http://127.0.0.1:9/hook"])
            # The first node dies here, before posting it: the message is leased, not gone.
            while_leased = await second.take(["http:http://127.0.0.1:9/hook"])
            sql(dsn, "UPDATE rpc_outbox SET due_at = now() RETURNING 1")  # the lease ran out
            again = await second.take(["http:http://127.0.0.1:9/hook"])
            await second.delivered([d.seq for d in again])
            return taken, while_leased, again
        finally:
            await first.close()
            await second.close()

    taken, while_leased, again = asyncio.run(scenario())
    assert [(d.ref, d.attempts) for d in taken] == [("job", 0)]
    assert while_leased == []
    assert [(d.ref, d.attempts) for d in again] == [("job", 1)]
    assert sql(dsn, "SELECT count(*) FROM rpc_outbox") == [(0,)]
