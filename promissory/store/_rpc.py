"""The durable-promise protocol's operations on Postgres, each one transaction.

``RpcStore`` holds an asyncio connection pool on the store's tables: a protocol promise is a
row of ``promises`` (so an actor can await it, and a protocol client can await an actor's);
tasks, callbacks, listeners, schedules and the outbox of push messages are the ``rpc_*``
tables. Settling a promise that carries obligations, however it is settled, runs the
settle trigger's protocol part (``promissory_settled``: its task fulfilled, its awaiters
resumed, its listeners unblocked), so a promise settled by an actor or by the timeout sweep
wakes protocol workers as one settled over HTTP does. Locks are taken promises first, then
tasks; a deadlock or serialization failure retries the whole operation.

Example:
    >>> rpc = RpcStore(dsn)  # doctest: +SKIP
    >>> await rpc.open()
    >>> promise, created = await rpc.promise_create("p", timeout_at=2**62, param=None, tags={})

"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import psycopg
import psycopg_pool

from ..errors import ProtocolError, StoreUnavailableError
from ._promises import page_from_rows, promise_from_row, search_query
from ._records import Page, Promise, PromiseState
from ._rpc_background import RpcBackground
from ._rpc_records import Acquired, RpcSchedule, RpcTask
from ._rpc_rules import (
    DELAY,
    TARGET,
    TaskState,
    check_acquire,
    check_create,
    check_id,
    check_lease,
    next_run,
    parse_cron,
    route_of,
)
from ._rpc_steps import (
    GET_LOCKED,
    SCHEDULE_COLUMNS,
    TASK_COLUMNS,
    TIMEOUT_TOUCHED,
    Conn,
    acquire_task,
    add_callback,
    awaitable,
    branch_of,
    callback_on,
    check_callback,
    configure_async,
    create_promise,
    db_now,
    find_task,
    get_promise,
    get_schedule,
    get_task,
    schedule_from_row,
    settle_promise,
    task_from_row,
    task_to_pending,
)
from ._schema import rpc_channel_for

T = TypeVar("T")


class RpcStore(RpcBackground):
    """The protocol's operations on the store at ``dsn``, for an asyncio server.

    Every method is one transaction and raises ``ProtocolError`` (with the protocol's
    status) for a request it refuses, having written nothing.

    Args:
        dsn: the database (its search_path names the schema, as for ``Store``).
        pool_size: the most connections held.

    """

    def __init__(self, dsn: str, *, pool_size: int = 8) -> None:
        self.dsn = dsn
        self._pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=configure_async,
            open=False,
            name="promissory-rpc",
        )
        self.channel = ""

    async def open(self, timeout: float = 10.0) -> None:
        """Open the pool and learn the schema's NOTIFY channel."""
        await self._pool.open(wait=True, timeout=timeout)
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT current_schema()")).fetchone()
        self.channel = rpc_channel_for(str(row[0]) if row else "public")

    async def close(self) -> None:
        """Close every connection."""
        await self._pool.close()

    async def ping(self) -> bool:
        """Whether the database answers now."""
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        for attempt in range(20):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                await asyncio.sleep(0.002 * (attempt + 1))
            except psycopg_pool.PoolTimeout as exc:
                raise StoreUnavailableError(f"no database connection: {exc}") from exc
            except psycopg.OperationalError as exc:
                raise StoreUnavailableError(f"the database is unreachable: {exc}") from exc
        raise StoreUnavailableError("the operation kept deadlocking; gave up after 20 tries")

    # -- promises -------------------------------------------------------------------------------

    async def promise_get(self, id: str) -> Promise:
        """The promise ``id``, a timed-out one projected as settled (404 if none)."""
        check_id(id)

        async def work(conn: Conn) -> Promise:
            return await get_promise(conn, id)

        return await self._run(work)

    async def promise_create(
        self,
        id: str,
        *,
        timeout_at: int,
        param: str | None,
        tags: Mapping[str, str],
    ) -> tuple[Promise, bool]:
        """Create the promise, or find the one with that id (returned as it is, with
        ``False``); a targeted promise gets its task and an execute message.
        """
        check_create(id, timeout_at, tags)

        async def work(conn: Conn) -> tuple[Promise, bool]:
            return await create_promise(conn, id, timeout_at, param, tags)

        return await self._run(work)

    async def promise_settle(self, id: str, state: PromiseState, value: str | None) -> Promise:
        """Settle a pending promise; a settled one (or one past its timeout) is returned as it
        is. 404 if there is none.
        """
        check_id(id)
        if state not in (
            PromiseState.RESOLVED,
            PromiseState.REJECTED,
            PromiseState.REJECTED_CANCELED,
        ):
            raise ProtocolError(400, f"cannot settle a promise to {state.value!r}")

        async def work(conn: Conn) -> Promise:
            return await settle_promise(conn, id, state, value)

        return await self._run(work)

    async def register_callback(self, awaited: str, awaiter: str) -> Promise:
        """Resume task ``awaiter`` when ``awaited`` settles; the awaited promise as it is."""

        async def work(conn: Conn) -> Promise:
            promise, _ = await callback_on(conn, awaited, awaiter)
            return promise

        return await self._run(work)

    async def register_listener(self, awaited: str, address: str) -> Promise:
        """Send an unblock message to ``address`` when ``awaited`` settles."""
        check_id(awaited, "awaited")
        route = route_of(address)

        async def work(conn: Conn) -> Promise:
            await conn.execute(TIMEOUT_TOUCHED, ([awaited],))
            promise = await get_promise(conn, awaited, lock=True)
            if promise.state.settled:
                return promise
            if not awaitable(promise):
                raise ProtocolError(422, f"promise {awaited!r} is internal: it takes no listener")
            await conn.execute(
                "INSERT INTO rpc_listeners (awaited, address, route) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (awaited, address, route),
            )
            await conn.execute("UPDATE promises SET obligations = true WHERE id = %s", (awaited,))
            return promise

        return await self._run(work)

    async def promise_search(
        self,
        *,
        state: PromiseState | None,
        tags: Mapping[str, str] | None,
        limit: int,
        cursor: str | None,
    ) -> Page:
        """A page of promises in creation order, filtered by (projected) state and tags."""
        try:
            after = int(cursor) if cursor else None
        except ValueError:
            raise ProtocolError(400, f"invalid cursor {cursor!r}") from None
        query, params = search_query(
            prefix=None,
            states=[state] if state is not None else None,
            tags=json.dumps(dict(tags)) if tags else None,
            kind=None,
            created_after=None,
            created_before=None,
            after_seq=after,
            limit=limit,
        )

        async def work(conn: Conn) -> Page:
            rows = await (await conn.execute(query, params)).fetchall()
            return page_from_rows(rows, limit)

        return await self._run(work)

    # -- tasks ----------------------------------------------------------------------------------

    async def task_get(self, id: str) -> RpcTask:
        """The task ``id`` (404 if none)."""
        check_id(id)

        async def work(conn: Conn) -> RpcTask:
            return await get_task(conn, id)

        return await self._run(work)

    async def task_create(
        self,
        *,
        pid: str,
        ttl: int,
        id: str,
        timeout_at: int,
        param: str | None,
        tags: Mapping[str, str],
    ) -> tuple[Acquired, bool]:
        """Create a targeted promise with its task acquired by ``pid`` (``True``), or acquire
        the pending task of the existing one, or return it fulfilled (``False``). 409 if its
        task is held or suspended, 422 if the existing promise has no target.
        """
        check_id(pid, "pid")
        check_create(id, timeout_at, tags)
        if TARGET not in tags:
            raise ProtocolError(400, "task.create: the promise needs a resonate:target")
        if DELAY in tags:
            raise ProtocolError(400, "task.create: the promise cannot have a resonate:delay")

        async def work(conn: Conn) -> tuple[Acquired, bool]:
            promise, created = await create_promise(
                conn, id, timeout_at, param, tags, dispatch=False
            )
            task = await find_task(conn, id, lock=True)
            if task is None:
                raise ProtocolError(422, f"promise {id!r} exists and has no resonate:target")
            if task.state is TaskState.FULFILLED or promise.state.settled:
                return Acquired(task=task, promise=promise, preload=[]), False
            if task.state is not TaskState.PENDING:
                raise ProtocolError(409, f"task {id!r} already exists and is {task.state.value}")
            task = await acquire_task(conn, id, pid, ttl)
            preload = await branch_of(conn, promise)
            return Acquired(task=task, promise=promise, preload=preload), created

        return await self._run(work)

    async def task_acquire(self, id: str, version: int, pid: str, ttl: int) -> Acquired:
        """Acquire a pending task at ``version`` for ``pid`` with a lease of ``ttl`` ms."""
        check_id(id)
        check_id(pid, "pid")

        async def work(conn: Conn) -> Acquired:
            await conn.execute(TIMEOUT_TOUCHED, ([id],))
            promise = await get_promise(conn, id)
            task = await get_task(conn, id, lock=True)
            check_acquire(task.state, task.version, version, promise.state)
            task = await acquire_task(conn, id, pid, ttl)
            return Acquired(task=task, promise=promise, preload=await branch_of(conn, promise))

        return await self._run(work)

    async def task_release(self, id: str, version: int) -> None:
        """Give an acquired task back: pending at the next version, dispatched again."""
        check_id(id)

        async def work(conn: Conn) -> None:
            task = await get_task(conn, id, lock=True)
            check_lease(task.state, task.version, version, "task.release")
            await task_to_pending(conn, task)

        await self._run(work)

    async def task_fulfill(
        self, id: str, version: int, state: PromiseState, value: str | None
    ) -> Promise:
        """Settle the promise of an acquired task at ``version`` (the task is fulfilled)."""
        check_id(id)

        async def work(conn: Conn) -> Promise:
            await conn.execute(TIMEOUT_TOUCHED, ([id],))
            await get_promise(conn, id, lock=True)
            task = await get_task(conn, id, lock=True)
            check_lease(task.state, task.version, version, "task.fulfill")
            return await settle_promise(conn, id, state, value)

        return await self._run(work)

    async def task_suspend(
        self, id: str, version: int, awaited: Sequence[str]
    ) -> list[Promise] | None:
        """Park an acquired task until one of ``awaited`` settles: ``None`` when parked, or
        the preload to go on with now (the 300 redirect) when one has settled already.
        """
        check_id(id)
        for other in awaited:
            check_callback(other, id)

        async def work(conn: Conn) -> list[Promise] | None:
            ids = sorted(set(awaited))
            await conn.execute(TIMEOUT_TOUCHED, (ids,))
            rows = await (await conn.execute(GET_LOCKED, (ids,))).fetchall()
            found = {p.id: p for p in (promise_from_row(r) for r in rows)}
            task = await get_task(conn, id, lock=True)
            check_lease(task.state, task.version, version, "task.suspend")
            missing = [a for a in ids if a not in found]
            if missing:
                raise ProtocolError(404, f"awaited promise {missing[0]!r} not found")
            settled = [p for p in found.values() if p.state.settled]
            internal = [p for p in found.values() if not p.state.settled and not awaitable(p)]
            if internal:
                raise ProtocolError(
                    422, f"promise {internal[0].id!r} is internal: it takes no callback"
                )
            if task.resumes or settled:
                await conn.execute("UPDATE rpc_tasks SET resumes = '{}' WHERE id = %s", (id,))
                return await branch_of(conn, await get_promise(conn, id))
            for p in found.values():
                await add_callback(conn, p.id, id)
            await conn.execute(
                "UPDATE rpc_tasks SET state = 'suspended', pid = NULL, ttl = NULL, "
                "lease_at = NULL, retry_at = NULL, resumes = '{}' WHERE id = %s",
                (id,),
            )
            return None

        return await self._run(work)

    async def task_fence(
        self, id: str, version: int, action: Callable[[Conn], Awaitable[T]]
    ) -> tuple[T, list[Promise]]:
        """Run ``action`` (a create or settle, see ``fence_create``/``fence_settle``) only if
        the task is acquired at ``version``, in the same transaction.
        """
        check_id(id)

        async def work(conn: Conn) -> tuple[T, list[Promise]]:
            task = await get_task(conn, id, lock=True)
            check_lease(task.state, task.version, version, "task.fence")
            return await action(conn), []

        return await self._run(work)

    @staticmethod
    def fence_create(
        id: str, *, timeout_at: int, param: str | None, tags: Mapping[str, str]
    ) -> Callable[[Conn], Awaitable[tuple[Promise, bool]]]:
        """A ``promise.create`` for ``task_fence``."""
        check_create(id, timeout_at, tags)

        async def action(conn: Conn) -> tuple[Promise, bool]:
            return await create_promise(conn, id, timeout_at, param, tags)

        return action

    @staticmethod
    def fence_settle(
        id: str, state: PromiseState, value: str | None
    ) -> Callable[[Conn], Awaitable[Promise]]:
        """A ``promise.settle`` for ``task_fence``."""
        check_id(id)

        async def action(conn: Conn) -> Promise:
            return await settle_promise(conn, id, state, value)

        return action

    async def task_heartbeat(self, pid: str, tasks: Sequence[tuple[str, int]]) -> int:
        """Extend the lease of each task ``pid`` holds at the version given; how many."""
        if not tasks:
            return 0
        ids = [t[0] for t in tasks]
        versions = [t[1] for t in tasks]

        async def work(conn: Conn) -> int:
            cur = await conn.execute(
                "UPDATE rpc_tasks t SET lease_at = clock_timestamp() + t.ttl * interval '1 ms' "
                "FROM unnest(%s::text[], %s::bigint[]) AS v(vid, vversion) "
                'WHERE t.id = v.vid COLLATE "C" AND t.version = v.vversion '
                "AND t.state = 'acquired' AND t.pid = %s",
                (ids, versions, pid),
            )
            return cur.rowcount

        return await self._run(work)

    async def task_halt(self, id: str) -> None:
        """Take a task out of circulation (409 if fulfilled)."""
        check_id(id)

        async def work(conn: Conn) -> None:
            task = await get_task(conn, id, lock=True)
            if task.state is TaskState.FULFILLED:
                raise ProtocolError(409, f"task {id!r} is fulfilled")
            await conn.execute(
                "UPDATE rpc_tasks SET state = 'halted', pid = NULL, ttl = NULL, "
                "lease_at = NULL, retry_at = NULL WHERE id = %s",
                (id,),
            )

        await self._run(work)

    async def task_continue(self, id: str) -> None:
        """Put a halted task back in circulation: pending, dispatched (409 unless halted)."""
        check_id(id)

        async def work(conn: Conn) -> None:
            task = await get_task(conn, id, lock=True)
            if task.state is not TaskState.HALTED:
                raise ProtocolError(409, f"task {id!r} is {task.state.value}, not halted")
            await task_to_pending(conn, task)

        await self._run(work)

    async def task_search(
        self, *, state: TaskState | None, limit: int, cursor: str | None
    ) -> tuple[list[RpcTask], str | None]:
        """A page of tasks in id order, by state."""

        async def work(conn: Conn) -> tuple[list[RpcTask], str | None]:
            rows = await (
                await conn.execute(
                    f"SELECT {TASK_COLUMNS} FROM rpc_tasks WHERE (%s::text IS NULL OR "
                    "state = %s) AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
                    (
                        state.value if state else None,
                        state.value if state else None,
                        cursor,
                        cursor,
                        limit + 1,
                    ),
                )
            ).fetchall()
            tasks = [task_from_row(r) for r in rows[:limit]]
            return tasks, (tasks[-1].id if len(rows) > limit else None)

        return await self._run(work)

    # -- schedules ------------------------------------------------------------------------------

    async def schedule_create(
        self,
        id: str,
        *,
        cron: str,
        promise_id: str,
        promise_timeout: int,
        promise_param: str | None,
        promise_tags: Mapping[str, str],
    ) -> tuple[RpcSchedule, bool]:
        """Create a schedule, or find the one with that id (returned as it is, ``False``)."""
        check_id(id)
        if ":" in id:
            raise ProtocolError(400, f"schedule id {id!r} must not contain ':'")
        check_id(promise_id, "promiseId")
        parse_cron(cron)
        if promise_timeout < 0:
            raise ProtocolError(400, "promiseTimeout must not be negative")
        if TARGET not in promise_tags:
            raise ProtocolError(400, "promiseTags must include a resonate:target tag")
        route_of(promise_tags[TARGET])

        async def work(conn: Conn) -> tuple[RpcSchedule, bool]:
            now = await db_now(conn)
            row = await (
                await conn.execute(
                    "INSERT INTO rpc_schedules (id, cron, promise_id, promise_timeout, "
                    "promise_param, promise_tags, created_at, next_run_at) "
                    "VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s) "
                    f"ON CONFLICT (id) DO NOTHING RETURNING {SCHEDULE_COLUMNS}",
                    (
                        id,
                        cron,
                        promise_id,
                        promise_timeout,
                        promise_param,
                        json.dumps(dict(promise_tags)),
                        now,
                        next_run(cron, now),
                    ),
                )
            ).fetchone()
            if row is not None:
                return schedule_from_row(row), True
            return await get_schedule(conn, id), False

        return await self._run(work)

    async def schedule_get(self, id: str) -> RpcSchedule:
        """The schedule ``id`` (404 if none)."""
        check_id(id)

        async def work(conn: Conn) -> RpcSchedule:
            return await get_schedule(conn, id)

        return await self._run(work)

    async def schedule_delete(self, id: str) -> None:
        """Delete the schedule ``id`` (404 if none)."""
        check_id(id)

        async def work(conn: Conn) -> None:
            cur = await conn.execute("DELETE FROM rpc_schedules WHERE id = %s", (id,))
            if cur.rowcount == 0:
                raise ProtocolError(404, f"schedule {id!r} not found")

        await self._run(work)

    async def schedule_search(
        self, *, tags: Mapping[str, str] | None, limit: int, cursor: str | None
    ) -> tuple[list[RpcSchedule], str | None]:
        """A page of schedules in id order, by promise tags."""

        async def work(conn: Conn) -> tuple[list[RpcSchedule], str | None]:
            rows = await (
                await conn.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM rpc_schedules "
                    "WHERE (%s::jsonb IS NULL OR promise_tags @> %s::jsonb) "
                    "AND (%s::text IS NULL OR id > %s) ORDER BY id LIMIT %s",
                    (
                        json.dumps(dict(tags)) if tags else None,
                        json.dumps(dict(tags)) if tags else None,
                        cursor,
                        cursor,
                        limit + 1,
                    ),
                )
            ).fetchall()
            found = [schedule_from_row(r) for r in rows[:limit]]
            return found, (found[-1].id if len(rows) > limit else None)

        return await self._run(work)
