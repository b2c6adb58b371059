"""The steps the durable-promise protocol's operations are made of, on a connection inside a
transaction: the SQL, rows to records, and the reads and writes ``RpcStore`` composes.

Locks are taken promises first (by id), then tasks, by every step that takes both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg

from ..errors import ProtocolError
from ._promises import COLUMNS, promise_from_row
from ._records import Promise, PromiseKind, PromiseState
from ._rpc_records import RpcSchedule, RpcTask
from ._rpc_rules import (
    DELAY,
    RETRY,
    TARGET,
    TaskState,
    check_create,
    check_id,
    datetime_to_ms,
    is_external,
    is_timer,
    ms_to_datetime,
    next_run,
    origin_of,
    route_of,
    schedule_promise_id,
)

Conn = psycopg.AsyncConnection[Any]

_tags_decoder = msgspec.json.Decoder(dict[str, str])
EXTERNAL_SQL = (
    "(tags ? 'resonate:target' OR tags->>'resonate:timer' = 'true' "
    "OR tags->>'resonate:external' = 'true' OR tags->>'resonate:scope' = 'global')"
)
TASK_COLUMNS = "id, state, version, pid, ttl, resumes, route"
SCHEDULE_COLUMNS = (
    "id, cron, promise_id, promise_timeout, promise_param, promise_tags, created_at, "
    "next_run_at, last_run_at"
)
TASK_STATE_OF = {s.value: s for s in TaskState}

# A pending promise past its deadline is settled (timeout always wins) when an operation
# touches it, so its effects (task fulfilled, awaiters resumed) happen before the answer.
TIMEOUT_TOUCHED = """
UPDATE promises SET
    state = CASE WHEN kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END,
    settled_at = timeout_at, value = NULL, awaiting = NULL
WHERE id = ANY(%s) AND state = 'pending' AND timeout_at <= clock_timestamp()
"""

INSERT_PROMISE = f"""
INSERT INTO promises (id, state, param, tags, timeout_at, created_at, settled_at, kind,
                      obligations)
SELECT %(id)s,
       CASE WHEN t.expired THEN %(timeout_state)s ELSE 'pending' END,
       %(param)s::jsonb, %(tags)s::jsonb, t.at,
       CASE WHEN t.expired THEN t.at ELSE clock_timestamp() END,
       CASE WHEN t.expired THEN t.at END,
       %(kind)s, %(obligations)s
FROM (SELECT %(at)s::timestamptz AS at,
             coalesce(%(at)s::timestamptz <= clock_timestamp(), false) AS expired) t
ON CONFLICT (id) DO NOTHING
RETURNING {COLUMNS}
"""

SETTLE_PROMISE = f"""
UPDATE promises AS p SET
    state = CASE WHEN c.expired THEN
                 CASE WHEN p.kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END
                 ELSE %(state)s END,
    value = CASE WHEN c.expired THEN NULL ELSE %(value)s::jsonb END,
    settled_at = CASE WHEN c.expired THEN p.timeout_at ELSE c.now END,
    awaiting = NULL
FROM (SELECT q.id AS cid, coalesce(q.timeout_at <= n.now, false) AS expired, n.now
      FROM promises q, (SELECT clock_timestamp() AS now) n WHERE q.id = %(id)s) c
WHERE p.id = c.cid AND p.state = 'pending'
RETURNING {COLUMNS.replace("clock_timestamp()", "c.now")}
"""

GET_PROMISE = f"SELECT {COLUMNS} FROM promises WHERE id = %s"
GET_LOCKED = f"SELECT {COLUMNS} FROM promises WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
GET_TASK = f"SELECT {TASK_COLUMNS} FROM rpc_tasks WHERE id = %s"
TASK_LOCKED = GET_TASK + " FOR UPDATE"
PRELOAD = (
    f"SELECT {COLUMNS} FROM promises WHERE tags ? 'resonate:branch' "
    "AND tags->>'resonate:branch' = %s AND id <> %s ORDER BY seq"
)
OUTBOX_EXECUTE = "INSERT INTO rpc_outbox (route, kind, ref, version) VALUES (%s, 'execute', %s, %s)"


def task_from_row(row: Sequence[Any]) -> RpcTask:
    """Build an ``RpcTask`` from a row selected with the task columns."""
    return RpcTask(
        id=row[0],
        state=TASK_STATE_OF[row[1]],
        version=row[2],
        pid=row[3],
        ttl=row[4],
        resumes=list(row[5] or ()),
        route=row[6],
    )


def schedule_from_row(row: Sequence[Any]) -> RpcSchedule:
    """Build an ``RpcSchedule`` from a row selected with the schedule columns."""
    return RpcSchedule(
        id=row[0],
        cron=row[1],
        promise_id=row[2],
        promise_timeout=row[3],
        promise_param=msgspec.Raw(row[4]) if row[4] is not None else None,
        promise_tags=_tags_decoder.decode(row[5]) if row[5] else {},
        created_at=row[6],
        next_run_at=row[7],
        last_run_at=row[8],
    )


class RawJsonLoader(psycopg.adapt.Loader):
    def load(self, data: Any) -> bytes:
        return bytes(data)


async def configure_async(conn: Conn) -> None:
    conn.adapters.register_loader("jsonb", RawJsonLoader)
    conn.adapters.register_loader("json", RawJsonLoader)


# -- the steps of the operations, on a connection inside a transaction ------------------------


async def db_now(conn: Conn) -> datetime:
    row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


async def get_promise(conn: Conn, id: str, *, lock: bool = False) -> Promise:
    query = GET_PROMISE + (" FOR UPDATE" if lock else "")
    row = await (await conn.execute(query, (id,))).fetchone()
    if row is None:
        raise ProtocolError(404, f"promise {id!r} not found")
    return promise_from_row(row)


async def find_task(conn: Conn, id: str, *, lock: bool = False) -> RpcTask | None:
    row = await (await conn.execute(TASK_LOCKED if lock else GET_TASK, (id,))).fetchone()
    return task_from_row(row) if row is not None else None


async def get_task(conn: Conn, id: str, *, lock: bool = False) -> RpcTask:
    task = await find_task(conn, id, lock=lock)
    if task is None:
        raise ProtocolError(404, f"task {id!r} not found")
    return task


async def get_schedule(conn: Conn, id: str) -> RpcSchedule:
    row = await (
        await conn.execute(f"SELECT {SCHEDULE_COLUMNS} FROM rpc_schedules WHERE id = %s", (id,))
    ).fetchone()
    if row is None:
        raise ProtocolError(404, f"schedule {id!r} not found")
    return schedule_from_row(row)


async def create_promise(
    conn: Conn,
    id: str,
    timeout_at: int,
    param: str | None,
    tags: Mapping[str, str],
    *,
    dispatch: bool = True,
) -> tuple[Promise, bool]:
    target = tags.get(TARGET)
    timer = is_timer(tags)
    row = await (
        await conn.execute(
            INSERT_PROMISE,
            {
                "id": id,
                "timeout_state": "resolved" if timer else "rejected_timedout",
                "param": param,
                "tags": json.dumps(dict(tags)),
                "at": ms_to_datetime(timeout_at),
                "kind": "timer" if timer else "promise",
                "obligations": target is not None,
            },
        )
    ).fetchone()
    if row is None:
        await conn.execute(TIMEOUT_TOUCHED, ([id],))
        return await get_promise(conn, id), False
    promise = promise_from_row(row)
    if target is not None:
        route = route_of(target)
        if promise.state.settled:
            state, retry = "fulfilled", None
        else:
            delay = tags.get(DELAY)
            state = "pending"
            retry = ms_to_datetime(int(delay)) if delay is not None else None
        await conn.execute(
            "INSERT INTO rpc_tasks (id, state, route, retry_at) "
            "VALUES (%s, %s, %s, coalesce(%s, clock_timestamp() + %s))",
            (id, state, route, retry, RETRY),
        )
        if state == "pending" and dispatch and retry is None:
            await conn.execute(OUTBOX_EXECUTE, (route, id, 0))
    return promise, True


async def settle_promise(conn: Conn, id: str, state: PromiseState, value: str | None) -> Promise:
    row = await (
        await conn.execute(SETTLE_PROMISE, {"id": id, "state": state.value, "value": value})
    ).fetchone()
    if row is not None:
        return promise_from_row(row)
    return await get_promise(conn, id)


async def acquire_task(conn: Conn, id: str, pid: str, ttl: int) -> RpcTask:
    row = await (
        await conn.execute(
            "UPDATE rpc_tasks SET state = 'acquired', pid = %s, ttl = %s, "
            "lease_at = clock_timestamp() + %s * interval '1 ms', retry_at = NULL, "
            f"resumes = '{{}}' WHERE id = %s RETURNING {TASK_COLUMNS}",
            (pid, ttl, max(ttl, 1), id),
        )
    ).fetchone()
    assert row is not None
    return task_from_row(row)


async def task_to_pending(conn: Conn, task: RpcTask) -> None:
    await conn.execute(
        "UPDATE rpc_tasks SET state = 'pending', version = version + 1, pid = NULL, "
        "ttl = NULL, lease_at = NULL, retry_at = clock_timestamp() + %s WHERE id = %s",
        (RETRY, task.id),
    )
    if task.route is not None:
        await conn.execute(OUTBOX_EXECUTE, (task.route, task.id, task.version + 1))


async def branch_of(conn: Conn, promise: Promise) -> list[Promise]:
    branch = promise.tags.get("resonate:branch")
    if branch is None:
        return []
    rows = await (await conn.execute(PRELOAD, (branch, promise.id))).fetchall()
    return [promise_from_row(r) for r in rows]


def awaitable(promise: Promise) -> bool:
    # A protocol promise is external by its tags; a promise an actor made (no resonate tags)
    # is awaitable when it is one an outsider settles (not a step or a message).
    if any(k.startswith("resonate:") for k in promise.tags):
        return is_external(promise.tags)
    return promise.kind in (PromiseKind.PROMISE, PromiseKind.TIMER)


def check_callback(awaited: str, awaiter: str) -> None:
    check_id(awaited, "awaited")
    check_id(awaiter, "awaiter")
    if awaited == awaiter:
        raise ProtocolError(400, f"promise {awaited!r} cannot await itself")
    if origin_of(awaited) != origin_of(awaiter):
        raise ProtocolError(
            400, f"awaited {awaited!r} and awaiter {awaiter!r} have different origins"
        )


async def add_callback(conn: Conn, awaited: str, awaiter: str) -> None:
    await conn.execute(
        "INSERT INTO rpc_callbacks (awaited, awaiter) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (awaited, awaiter),
    )
    await conn.execute(
        "UPDATE promises SET obligations = true WHERE id = %s AND NOT obligations", (awaited,)
    )


async def callback_on(conn: Conn, awaited: str, awaiter: str) -> tuple[Promise, bool]:
    check_callback(awaited, awaiter)
    await conn.execute(TIMEOUT_TOUCHED, ([awaited, awaiter],))
    rows = await (await conn.execute(GET_LOCKED, (sorted({awaited, awaiter}),))).fetchall()
    found = {p.id: p for p in (promise_from_row(r) for r in rows)}
    if awaited not in found:
        raise ProtocolError(404, f"promise {awaited!r} not found")
    if awaiter not in found:
        raise ProtocolError(422, f"awaiter {awaiter!r} not found")
    if TARGET not in found[awaiter].tags:
        raise ProtocolError(422, f"awaiter {awaiter!r} has no resonate:target")
    promise = found[awaited]
    if promise.state.settled:
        return promise, False
    if not awaitable(promise):
        raise ProtocolError(422, f"promise {awaited!r} is internal: it takes no callback")
    await add_callback(conn, awaited, awaiter)
    return promise, True


async def fire_schedule(conn: Conn, schedule: RpcSchedule) -> None:
    """Create the promise a due schedule makes (named for the time it was due, timing out
    ``promiseTimeout`` after it fired) and move the schedule to its next time.
    """
    due = schedule.next_run_at
    now = await db_now(conn)
    tags = dict(schedule.promise_tags)
    tags["resonate:schedule"] = schedule.id
    promise_id = schedule_promise_id(schedule.promise_id, schedule.id, due)
    param = bytes(schedule.promise_param).decode() if schedule.promise_param else None
    timeout_at = datetime_to_ms(now) + schedule.promise_timeout
    try:
        check_create(promise_id, timeout_at, tags)
        await create_promise(conn, promise_id, timeout_at, param, tags)
    except ProtocolError:
        pass  # a template that makes a bad id fires nothing; the schedule goes on
    await conn.execute(
        "UPDATE rpc_schedules SET last_run_at = next_run_at, next_run_at = %s WHERE id = %s",
        (next_run(schedule.cron, max(due, now)), schedule.id),
    )
