"""Every kind of the protocol's ``POST /`` envelope, and its error rows, as a table.

Each row runs on a fresh schema holding the same small world (made through the protocol
itself), sends one envelope, and checks the status (``head.status``) and what the answer or
the tables then hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from promissory.protocol import KINDS, answer
from promissory.store import RpcStore, Store
from tests.kit import sql

VERSION = "2026-04-01"
HOUR = 3_600_000


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def envelope(kind: str, data: Any, **head: Any) -> bytes:
    return json.dumps(
        {"kind": kind, "head": {"corrId": "t", "version": VERSION, **head}, "data": data}
    ).encode()


def create(id: str, *, at: int = HOUR, tags: dict[str, str] | None = None, **extra: Any) -> Any:
    return {"id": id, "timeoutAt": NOW + at, "tags": tags or {}, **extra}


EXT = {"resonate:scope": "global", "resonate:external": "true"}
TARGET = {"resonate:target": "poll://any@g"}
NOW = int(time.time() * 1000)  # the rows' timeouts are an hour or more after it

# The world every row starts from.
WORLD: list[tuple[str, Any]] = [
    ("promise.create", create("ext", tags=EXT)),
    ("promise.create", create("done", tags=EXT)),
    ("promise.settle", {"id": "done", "state": "resolved", "value": {"data": b64(1)}}),
    ("promise.create", create("local", tags={"resonate:scope": "local"})),
    ("promise.create", create("old", at=-1000, tags=EXT)),
    (
        "task.create",
        {
            "pid": "w1",
            "ttl": 60_000,
            "action": {"kind": "promise.create", "head": {}, "data": create("wf", tags=TARGET)},
        },
    ),
    ("promise.create", create("wf:ext", tags={**EXT, "resonate:origin": "wf"})),
    ("promise.create", create("wf:local", tags={"resonate:scope": "local"})),
    ("promise.create", create("wf:done", tags=EXT)),
    ("promise.settle", {"id": "wf:done", "state": "resolved"}),
    ("promise.create", create("queued", tags=TARGET)),
    (
        "schedule.create",
        {
            "id": "sch",
            "cron": "0 0 1 1 *",
            "promiseId": "sch.{{.timestamp}}",
            "promiseTimeout": HOUR,
            "promiseTags": TARGET,
        },
    ),
]


@dataclass
class Row:
    """One envelope and what must come of it."""

    name: str
    kind: str
    data: Any
    status: int
    check: Callable[[Any, str], None] | None = None
    raw: bytes | None = None
    head: dict[str, Any] = field(default_factory=dict)


def promise(state: str, **more: Any) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        assert data["promise"]["state"] == state, data
        for key, value in more.items():
            assert data["promise"][key] == value, (key, data)

    return check


def task_state(id: str, state: str, version: int) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        assert sql(dsn, "SELECT state, version FROM rpc_tasks WHERE id = %s", id) == [
            (state, version)
        ]

    return check


def error(words: str) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        assert isinstance(data, str) and words in data, data

    return check


def both(*checks: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        for c in checks:
            c(data, dsn)

    return check


def outbox(expected: list[tuple[str, str, int | None]]) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        rows = sql(dsn, "SELECT kind, ref, version FROM rpc_outbox ORDER BY seq")
        assert [r for r in rows if r[1] != "queued"] == expected

    return check


def callbacks(expected: list[tuple[str, str]]) -> Callable[[Any, str], None]:
    def check(data: Any, dsn: str) -> None:
        assert sql(dsn, "SELECT awaited, awaiter FROM rpc_callbacks ORDER BY 1") == expected

    return check


def fence(kind: str, data: Any, version: int = 0, id: str = "wf") -> Any:
    return {"id": id, "version": version, "action": {"kind": kind, "head": {}, "data": data}}


def suspend(awaited: list[str], version: int = 0, awaiter: str = "wf") -> Any:
    actions = [
        {
            "kind": "promise.register_callback",
            "head": {},
            "data": {"awaited": a, "awaiter": awaiter},
        }
        for a in awaited
    ]
    return {"id": "wf", "version": version, "actions": actions}


def fulfill(version: int = 0, id: str = "wf", state: str = "resolved") -> Any:
    return fence("promise.settle", {"id": id, "state": state, "value": {"data": b64(7)}}, version)


ROWS = [
    # -- the envelope --------------------------------------------------------------------------
    Row("malformed JSON", "", None, 400, error("malformed envelope"), raw=b"{nope"),
    Row("no head", "", None, 400, error("malformed envelope"), raw=b'{"kind": "x", "data": {}}'),
    Row("data not an object", "promise.get", [], 400, error("malformed envelope")),
    Row(
        "unsupported version",
        "promise.get",
        {"id": "ext"},
        400,
        error("unsupported protocol"),
        head={"version": "1.0.0"},
    ),
    Row("unknown kind", "promise.nope", {}, 400, error("unknown kind")),
    Row("empty kind", "", {}, 400, error("unknown kind")),
    Row("debug kinds are not served", "debug.reset", {}, 403, error("not served")),
    # -- promise.get ---------------------------------------------------------------------------
    Row("get", "promise.get", {"id": "ext"}, 200, promise("pending", tags=EXT)),
    Row("get missing", "promise.get", {"id": "nope"}, 404, error("not found")),
    Row("get without id", "promise.get", {}, 400, error("invalid data")),
    Row(
        "get projects a timeout",
        "promise.get",
        {"id": "done"},
        200,
        promise("resolved", value={"data": b64(1)}),
    ),
    # -- promise.create ------------------------------------------------------------------------
    Row(
        "create",
        "promise.create",
        create("new", param={"data": b64({"a": 1})}),
        201,
        both(
            promise("pending", param={"data": b64({"a": 1})}),
            lambda d, dsn: sql(dsn, "SELECT param FROM promises WHERE id = 'new'") == [({"a": 1},)],
        ),
    ),
    Row(
        "create with a value that is not JSON keeps it exactly",
        "promise.create",
        create("raw", param={"headers": {"enc": "x"}, "data": "AAEC"}),
        201,
        promise("pending", param={"headers": {"enc": "x"}, "data": "AAEC"}),
    ),
    Row(
        "create existing returns it unchanged",
        "promise.create",
        create("ext", tags={"other": "x"}),
        200,
        promise("pending", tags=EXT),
    ),
    Row(
        "create past its timeout is timed out at once",
        "promise.create",
        create("late", at=-5),
        201,
        lambda d, dsn: (
            (
                d["promise"]["state"] == "rejected_timedout"
                and d["promise"]["createdAt"]
                == d["promise"]["settledAt"]
                == d["promise"]["timeoutAt"]
            )
            or pytest.fail(str(d))
        ),
    ),
    Row(
        "create a timer past its timeout resolves it",
        "promise.create",
        create("nap", at=-5, tags={"resonate:timer": "true"}),
        201,
        promise("resolved"),
    ),
    Row(
        "create with a target makes a task and an execute",
        "promise.create",
        create("job", tags=TARGET),
        201,
        both(task_state("job", "pending", 0), outbox([("execute", "job", 0)])),
    ),
    Row(
        "create with a delay dispatches later",
        "promise.create",
        create("later", tags={**TARGET, "resonate:delay": str(NOW + HOUR // 2)}),
        201,
        both(task_state("later", "pending", 0), outbox([])),
    ),
    Row("create a null byte id", "promise.create", create("a\x00b"), 400, error("null byte")),
    Row(
        "create with a bad target",
        "promise.create",
        create("bad", tags={"resonate:target": "ftp://x"}),
        400,
        error("invalid address"),
    ),
    Row(
        "create with a delay and no target",
        "promise.create",
        create("bad", tags={"resonate:delay": str(NOW)}),
        400,
        error("needs a resonate:target"),
    ),
    Row(
        "create with a delay after the timeout",
        "promise.create",
        create("bad", tags={**TARGET, "resonate:delay": str(NOW + 2 * HOUR)}),
        400,
        error("before timeoutAt"),
    ),
    Row(
        "create outside its origin",
        "promise.create",
        create("x:1", tags={"resonate:origin": "y"}),
        400,
        error("does not extend"),
    ),
    Row(
        "create with a colon in its origin",
        "promise.create",
        create("a:b", tags={"resonate:origin": "a:b"}),
        400,
        error("must not contain ':'"),
    ),
    Row("create without timeoutAt", "promise.create", {"id": "x"}, 400, error("timeoutAt")),
    # -- promise.settle ------------------------------------------------------------------------
    Row(
        "settle",
        "promise.settle",
        {"id": "ext", "state": "rejected", "value": {"data": b64("no")}},
        200,
        promise("rejected", value={"data": b64("no")}),
    ),
    Row(
        "settle a settled promise returns it as it is",
        "promise.settle",
        {"id": "done", "state": "rejected"},
        200,
        promise("resolved", value={"data": b64(1)}),
    ),
    Row(
        "settle after the timeout: timeout wins",
        "promise.settle",
        {"id": "old", "state": "resolved"},
        200,
        promise("rejected_timedout"),
    ),
    Row(
        "settle missing",
        "promise.settle",
        {"id": "nope", "state": "resolved"},
        404,
        error("not found"),
    ),
    Row(
        "settle to pending",
        "promise.settle",
        {"id": "ext", "state": "pending"},
        400,
        error("invalid data"),
    ),
    Row(
        "settle fulfills its task",
        "promise.settle",
        {"id": "queued", "state": "resolved"},
        200,
        task_state("queued", "fulfilled", 0),
    ),
    # -- promise.register_callback -------------------------------------------------------------
    Row(
        "callback",
        "promise.register_callback",
        {"awaited": "wf:ext", "awaiter": "wf"},
        200,
        both(promise("pending"), callbacks([("wf:ext", "wf")])),
    ),
    Row(
        "callback on a settled promise registers nothing",
        "promise.register_callback",
        {"awaited": "wf:done", "awaiter": "wf"},
        200,
        both(promise("resolved"), callbacks([])),
    ),
    Row(
        "callback on a missing promise",
        "promise.register_callback",
        {"awaited": "wf:nope", "awaiter": "wf"},
        404,
        error("not found"),
    ),
    Row(
        "callback from a missing awaiter",
        "promise.register_callback",
        {"awaited": "wf:ext", "awaiter": "wf:gone"},
        422,
        error("awaiter"),
    ),
    Row(
        "callback from an awaiter with no target",
        "promise.register_callback",
        {"awaited": "wf:done", "awaiter": "wf:ext"},
        422,
        error("no resonate:target"),
    ),
    Row(
        "callback on an internal promise",
        "promise.register_callback",
        {"awaited": "wf:local", "awaiter": "wf"},
        422,
        error("internal"),
    ),
    Row(
        "callback on itself",
        "promise.register_callback",
        {"awaited": "wf", "awaiter": "wf"},
        400,
        error("itself"),
    ),
    Row(
        "callback across origins",
        "promise.register_callback",
        {"awaited": "ext", "awaiter": "wf"},
        400,
        error("different origins"),
    ),
    # -- promise.register_listener -------------------------------------------------------------
    Row(
        "listener",
        "promise.register_listener",
        {"awaited": "ext", "address": "poll://uni@g/w9"},
        200,
        lambda d, dsn: (
            sql(dsn, "SELECT route FROM rpc_listeners") == [("uni:g/w9",)]
            or pytest.fail("no listener")
        ),
    ),
    Row(
        "listener on a settled promise",
        "promise.register_listener",
        {"awaited": "done", "address": "poll://uni@g/w9"},
        200,
        promise("resolved"),
    ),
    Row(
        "listener with a bad address",
        "promise.register_listener",
        {"awaited": "ext", "address": "nowhere"},
        400,
        error("invalid address"),
    ),
    Row(
        "listener on a missing promise",
        "promise.register_listener",
        {"awaited": "nope", "address": "poll://any@g"},
        404,
        error("not found"),
    ),
    Row(
        "listener on an internal promise",
        "promise.register_listener",
        {"awaited": "local", "address": "poll://any@g"},
        422,
        error("internal"),
    ),
    # -- promise.search ------------------------------------------------------------------------
    Row(
        "search by state",
        "promise.search",
        {"state": "resolved"},
        200,
        lambda d, dsn: (
            sorted(p["id"] for p in d["promises"]) == ["done", "wf:done"] or pytest.fail(str(d))
        ),
    ),
    Row(
        "search projects timeouts",
        "promise.search",
        {"state": "rejected_timedout"},
        200,
        lambda d, dsn: [p["id"] for p in d["promises"]] == ["old"] or pytest.fail(str(d)),
    ),
    Row(
        "search by tags, a page at a time",
        "promise.search",
        {"tags": {"resonate:external": "true"}, "limit": 2},
        200,
        lambda d, dsn: (len(d["promises"]) == 2 and d["cursor"]) or pytest.fail(str(d)),
    ),
    Row("search with a bad limit", "promise.search", {"limit": 0}, 400, error("limit")),
    Row("search with a bad cursor", "promise.search", {"cursor": "x"}, 400, error("cursor")),
    # -- task.get / task.search ----------------------------------------------------------------
    Row(
        "task get",
        "task.get",
        {"id": "wf"},
        200,
        lambda d, dsn: (
            d["task"] == {"id": "wf", "state": "acquired", "version": 0, "pid": "w1", "ttl": 60_000}
            or pytest.fail(str(d))
        ),
    ),
    Row("task get missing", "task.get", {"id": "nope"}, 404, error("not found")),
    Row(
        "task search",
        "task.search",
        {"state": "pending"},
        200,
        lambda d, dsn: [t["id"] for t in d["tasks"]] == ["queued"] or pytest.fail(str(d)),
    ),
    # -- task.create ---------------------------------------------------------------------------
    Row(
        "task create",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.create", "head": {}, "data": create("t2", tags=TARGET)},
        },
        201,
        both(lambda d, dsn: d["task"]["state"] == "acquired" or pytest.fail(str(d)), outbox([])),
    ),
    Row(
        "task create of a pending task acquires it",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.create", "head": {}, "data": create("queued", tags=TARGET)},
        },
        200,
        task_state("queued", "acquired", 0),
    ),
    Row(
        "task create of a held task conflicts",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.create", "head": {}, "data": create("wf", tags=TARGET)},
        },
        409,
        error("already exists"),
    ),
    Row(
        "task create of a promise with no target",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.create", "head": {}, "data": create("ext", tags=TARGET)},
        },
        422,
        error("no resonate:target"),
    ),
    Row(
        "task create without a target",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.create", "head": {}, "data": create("t3")},
        },
        400,
        error("needs a resonate:target"),
    ),
    Row(
        "task create with another action",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {"kind": "promise.settle", "head": {}, "data": create("t3")},
        },
        400,
        error("must be promise.create"),
    ),
    Row(
        "task create past its timeout is fulfilled",
        "task.create",
        {
            "pid": "w2",
            "ttl": 5000,
            "action": {
                "kind": "promise.create",
                "head": {},
                "data": create("t4", at=-1, tags=TARGET),
            },
        },
        200,
        lambda d, dsn: (
            (d["task"]["state"], d["promise"]["state"]) == ("fulfilled", "rejected_timedout")
            or pytest.fail(str(d))
        ),
    ),
    # -- task.acquire --------------------------------------------------------------------------
    Row(
        "acquire",
        "task.acquire",
        {"id": "queued", "version": 0, "pid": "w2", "ttl": 1000},
        200,
        both(
            task_state("queued", "acquired", 0),
            lambda d, dsn: d["promise"]["id"] == "queued" or pytest.fail(str(d)),
        ),
    ),
    Row(
        "acquire at another version",
        "task.acquire",
        {"id": "queued", "version": 1, "pid": "w2", "ttl": 1000},
        409,
        error("version"),
    ),
    Row(
        "acquire a held task",
        "task.acquire",
        {"id": "wf", "version": 0, "pid": "w2", "ttl": 1},
        409,
        error("not pending"),
    ),
    Row(
        "acquire missing",
        "task.acquire",
        {"id": "nope", "version": 0, "pid": "w2", "ttl": 1},
        404,
        error("not found"),
    ),
    # -- task.release --------------------------------------------------------------------------
    Row(
        "release",
        "task.release",
        {"id": "wf", "version": 0},
        200,
        both(task_state("wf", "pending", 1), outbox([("execute", "wf", 1)])),
    ),
    Row(
        "release at a stale version",
        "task.release",
        {"id": "wf", "version": 3},
        409,
        error("version"),
    ),
    Row(
        "release a pending task",
        "task.release",
        {"id": "queued", "version": 0},
        409,
        error("not acquired"),
    ),
    Row("release missing", "task.release", {"id": "nope", "version": 0}, 404, error("not found")),
    # -- task.fulfill --------------------------------------------------------------------------
    Row(
        "fulfill",
        "task.fulfill",
        fulfill(),
        200,
        both(promise("resolved", value={"data": b64(7)}), task_state("wf", "fulfilled", 0)),
    ),
    Row("fulfill at a stale version", "task.fulfill", fulfill(version=2), 409, error("version")),
    Row("fulfill another promise", "task.fulfill", fulfill(id="ext"), 400, error("not the task")),
    Row("fulfill missing", "task.fulfill", {**fulfill(), "id": "nope"}, 400, error("not the task")),
    # -- task.suspend --------------------------------------------------------------------------
    Row(
        "suspend",
        "task.suspend",
        suspend(["wf:ext"]),
        200,
        both(task_state("wf", "suspended", 0), callbacks([("wf:ext", "wf")])),
    ),
    Row(
        "suspend on a settled promise redirects",
        "task.suspend",
        suspend(["wf:ext", "wf:done"]),
        300,
        both(
            task_state("wf", "acquired", 0),
            lambda d, dsn: isinstance(d["preload"], list) or pytest.fail(str(d)),
        ),
    ),
    Row(
        "suspend on an internal promise",
        "task.suspend",
        suspend(["wf:local"]),
        422,
        error("internal"),
    ),
    Row(
        "suspend on a missing promise",
        "task.suspend",
        suspend(["wf:nope"]),
        404,
        error("not found"),
    ),
    Row(
        "suspend for another awaiter",
        "task.suspend",
        suspend(["wf:ext"], awaiter="wf:x"),
        400,
        error("awaiter must be the task"),
    ),
    Row("suspend across origins", "task.suspend", suspend(["ext"]), 400, error("origins")),
    Row(
        "suspend at a stale version",
        "task.suspend",
        suspend(["wf:ext"], version=1),
        409,
        error("version"),
    ),
    # -- task.fence ----------------------------------------------------------------------------
    Row(
        "fence a create",
        "task.fence",
        fence("promise.create", create("wf:1", tags={"resonate:scope": "local"})),
        200,
        lambda d, dsn: (
            (d["action"]["head"]["status"], d["action"]["data"]["promise"]["id"]) == (201, "wf:1")
            or pytest.fail(str(d))
        ),
    ),
    Row(
        "fence a settle",
        "task.fence",
        fence("promise.settle", {"id": "wf:ext", "state": "resolved"}),
        200,
        lambda d, dsn: d["action"]["data"]["promise"]["state"] == "resolved" or pytest.fail(str(d)),
    ),
    Row(
        "fence at a stale version acts not",
        "task.fence",
        fence("promise.settle", {"id": "wf:ext", "state": "resolved"}, version=1),
        409,
        lambda d, dsn: (
            sql(dsn, "SELECT state FROM promises WHERE id = 'wf:ext'") == [("pending",)]
            or pytest.fail("the fence acted")
        ),
    ),
    Row(
        "fence on a task not acquired",
        "task.fence",
        fence("promise.settle", {"id": "ext", "state": "resolved"}, id="queued"),
        409,
        error("not acquired"),
    ),
    Row(
        "fence missing",
        "task.fence",
        fence("promise.settle", {"id": "x", "state": "resolved"}, id="nope"),
        404,
        error("not found"),
    ),
    Row(
        "fence another action",
        "task.fence",
        fence("promise.get", {"id": "x"}),
        400,
        error("must be promise.create or promise.settle"),
    ),
    # -- task.heartbeat / halt / continue ------------------------------------------------------
    Row("heartbeat", "task.heartbeat", {"pid": "w1", "tasks": [{"id": "wf", "version": 0}]}, 200),
    Row(
        "heartbeat of nothing held",
        "task.heartbeat",
        {"pid": "w9", "tasks": [{"id": "nope", "version": 0}]},
        200,
    ),
    Row("halt", "task.halt", {"id": "queued"}, 200, task_state("queued", "halted", 0)),
    Row("halt missing", "task.halt", {"id": "nope"}, 404, error("not found")),
    Row("continue a task not halted", "task.continue", {"id": "queued"}, 409, error("not halted")),
    Row("continue missing", "task.continue", {"id": "nope"}, 404, error("not found")),
    # -- schedules -----------------------------------------------------------------------------
    Row(
        "schedule get",
        "schedule.get",
        {"id": "sch"},
        200,
        lambda d, dsn: d["schedule"]["promiseId"] == "sch.{{.timestamp}}" or pytest.fail(str(d)),
    ),
    Row("schedule get missing", "schedule.get", {"id": "nope"}, 404, error("not found")),
    Row(
        "schedule create",
        "schedule.create",
        {
            "id": "s2",
            "cron": "*/5 * * * *",
            "promiseId": "s2.{{.timestamp}}",
            "promiseTimeout": 1000,
            "promiseTags": TARGET,
        },
        201,
    ),
    Row(
        "schedule create existing",
        "schedule.create",
        {
            "id": "sch",
            "cron": "* * * * *",
            "promiseId": "other",
            "promiseTimeout": 1,
            "promiseTags": TARGET,
        },
        200,
        lambda d, dsn: d["schedule"]["cron"] == "0 0 1 1 *" or pytest.fail(str(d)),
    ),
    Row(
        "schedule create with a bad cron",
        "schedule.create",
        {
            "id": "s3",
            "cron": "61 * * * *",
            "promiseId": "x",
            "promiseTimeout": 1,
            "promiseTags": TARGET,
        },
        400,
        error("bad minute"),
    ),
    Row(
        "schedule create without a target",
        "schedule.create",
        {"id": "s3", "cron": "* * * * *", "promiseId": "x", "promiseTimeout": 1},
        400,
        error("resonate:target"),
    ),
    Row(
        "schedule delete",
        "schedule.delete",
        {"id": "sch"},
        200,
        lambda d, dsn: (
            sql(dsn, "SELECT count(*) FROM rpc_schedules") == [(0,)] or pytest.fail("kept")
        ),
    ),
    Row("schedule delete missing", "schedule.delete", {"id": "nope"}, 404, error("not found")),
    Row(
        "schedule search",
        "schedule.search",
        {},
        200,
        lambda d, dsn: [s["id"] for s in d["schedules"]] == ["sch"] or pytest.fail(str(d)),
    ),
]


def test_the_table_covers_every_kind() -> None:
    assert {r.kind for r in ROWS} >= set(KINDS)


async def world(rpc: RpcStore) -> None:
    for kind, data in WORLD:
        status, body = await answer(rpc, envelope(kind, data))
        assert status < 300, (kind, body)


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_envelope(row: Row, dsn: str) -> None:
    Store(dsn).close()

    async def scenario() -> tuple[int, Any]:
        rpc = RpcStore(dsn, pool_size=2)
        await rpc.open()
        try:
            await world(rpc)
            sql(dsn, "DELETE FROM rpc_outbox RETURNING 1")
            body = row.raw or envelope(row.kind, row.data, **row.head)
            status, out = await answer(rpc, body)
            return status, json.loads(out)
        finally:
            await rpc.close()

    status, reply = asyncio.run(scenario())
    assert status == reply["head"]["status"] == row.status, reply
    assert reply["head"]["version"] == VERSION
    if row.raw is None:
        assert reply["kind"] == row.kind and reply["head"]["corrId"] == "t"
    if row.check is not None:
        row.check(reply["data"], dsn)
