"""The background work of every node serving the protocol: the outbox's NOTIFY, firing what is
due (timeouts of external promises, expired leases, retries, schedules), and taking the push
messages a node's poll streams can deliver. Each row is taken by one node (``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import psycopg
from psycopg import sql

from ._promises import COLUMNS, promise_from_row
from ._records import Promise
from ._rpc_records import Delivery
from ._rpc_rules import OUTBOX_KEEP, RETRY, TAKE_LEASE
from ._rpc_steps import EXTERNAL_SQL, SCHEDULE_COLUMNS, Conn, fire_schedule, schedule_from_row

T = TypeVar("T")


class RpcBackground:
    """The part of ``RpcStore`` each node runs in the background."""

    dsn: str
    channel: str

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def listen(self, wake: Callable[[], None], stop: asyncio.Event) -> None:
        """Call ``wake`` on every outbox NOTIFY until ``stop`` is set (reconnecting)."""
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            except psycopg.OperationalError:
                await asyncio.sleep(0.5)
                continue
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                wake()
                gen = conn.notifies(timeout=1.0)
                while not stop.is_set():
                    async for _ in gen:
                        wake()
                    gen = conn.notifies(timeout=1.0)
            except psycopg.OperationalError:
                await asyncio.sleep(0.5)
            finally:
                await conn.close()

    # -- the background work of every node ------------------------------------------------------

    async def tick(self, limit: int = 500) -> int:
        """Fire what is due: external promises past their timeout, leases expired (the task
        pending again at the next version, redispatched), pending tasks to send again,
        schedules; drop push messages no worker took within ``OUTBOX_KEEP``. Returns how many
        things it fired.
        """

        async def work(conn: Conn) -> int:
            done = 0
            cur = await conn.execute(
                "UPDATE promises SET "
                "state = CASE WHEN kind = 'timer' THEN 'resolved' ELSE 'rejected_timedout' END, "
                "settled_at = timeout_at, value = NULL, awaiting = NULL "
                "WHERE id IN (SELECT id FROM promises WHERE state = 'pending' "
                f"AND timeout_at <= (SELECT clock_timestamp()) AND {EXTERNAL_SQL} "
                "ORDER BY timeout_at LIMIT %s FOR UPDATE SKIP LOCKED)",
                (limit,),
            )
            done += cur.rowcount
            cur = await conn.execute(
                "WITH due AS (UPDATE rpc_tasks SET state = 'pending', version = version + 1, "
                "pid = NULL, ttl = NULL, lease_at = NULL, "
                "retry_at = clock_timestamp() + %s WHERE id IN (SELECT id FROM rpc_tasks "
                "WHERE state = 'acquired' AND lease_at <= (SELECT clock_timestamp()) "
                "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, version, route) "
                "INSERT INTO rpc_outbox (route, kind, ref, version) "
                "SELECT route, 'execute', id, version FROM due WHERE route IS NOT NULL",
                (RETRY, limit),
            )
            done += cur.rowcount
            cur = await conn.execute(
                "WITH due AS (UPDATE rpc_tasks SET retry_at = clock_timestamp() + %s "
                "WHERE id IN (SELECT id FROM rpc_tasks WHERE state = 'pending' "
                "AND retry_at <= (SELECT clock_timestamp()) LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING id, version, route) "
                "INSERT INTO rpc_outbox (route, kind, ref, version) "
                "SELECT route, 'execute', id, version FROM due WHERE route IS NOT NULL",
                (RETRY, limit),
            )
            done += cur.rowcount
            await conn.execute(
                "DELETE FROM rpc_outbox WHERE seq IN (SELECT seq FROM rpc_outbox ORDER BY seq "
                "LIMIT %s FOR UPDATE SKIP LOCKED) AND created_at < clock_timestamp() - %s",
                (limit, OUTBOX_KEEP),
            )
            rows = await (
                await conn.execute(
                    f"SELECT {SCHEDULE_COLUMNS} FROM rpc_schedules "
                    "WHERE next_run_at <= clock_timestamp() ORDER BY next_run_at LIMIT %s "
                    "FOR UPDATE SKIP LOCKED",
                    (limit,),
                )
            ).fetchall()
            for row in rows:
                done += 1
                await fire_schedule(conn, schedule_from_row(row))
            return done

        return await self._run(work)

    async def take(self, routes: Sequence[str], limit: int = 200) -> list[Delivery]:
        """Take the due outbox messages for ``routes``, oldest first, with the promises of
        the unblock messages as they now stand.

        A message taken is not gone: it is leased (due again ``TAKE_LEASE`` later, its
        attempt counted) until ``delivered`` deletes it, so one whose node dies before it was
        handed over is taken again by another.
        """
        if not routes:
            return []

        async def work(conn: Conn) -> list[Delivery]:
            rows = await (
                await conn.execute(
                    "UPDATE rpc_outbox SET due_at = clock_timestamp() + %s, "
                    "attempts = attempts + 1 WHERE seq IN (SELECT seq FROM rpc_outbox "
                    "WHERE route = ANY(%s) AND due_at <= clock_timestamp() "
                    "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING seq, route, kind, ref, version, attempts - 1",
                    (TAKE_LEASE, list(routes), limit),
                )
            ).fetchall()
            refs = sorted({r[3] for r in rows if r[2] == "unblock"})
            promises: dict[str, Promise] = {}
            if refs:
                found = await (
                    await conn.execute(
                        f"SELECT {COLUMNS} FROM promises WHERE id = ANY(%s)", (refs,)
                    )
                ).fetchall()
                promises = {p.id: p for p in (promise_from_row(r) for r in found)}
            return sorted(
                (
                    Delivery(
                        seq=r[0],
                        route=r[1],
                        kind=r[2],
                        ref=r[3],
                        version=r[4],
                        promise=promises.get(r[3]),
                        attempts=r[5],
                    )
                    for r in rows
                ),
                key=lambda d: d.seq,
            )

        return await self._run(work)

    async def delivered(self, seqs: Sequence[int]) -> None:
        """Delete messages taken and handed over (given to a stream, or posted)."""
        if not seqs:
            return

        async def work(conn: Conn) -> None:
            await conn.execute("DELETE FROM rpc_outbox WHERE seq = ANY(%s)", (list(seqs),))

        await self._run(work)

    async def retry_later(self, delivery: Delivery, delay: timedelta) -> None:
        """Make a message taken from the outbox due again after ``delay`` (a post that
        failed); it keeps its age, so ``OUTBOX_KEEP`` after it was first put there it is
        dropped like any other.
        """

        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE rpc_outbox SET due_at = clock_timestamp() + %s WHERE seq = %s",
                (delay, delivery.seq),
            )

        await self._run(work)

    async def routes_waiting(self, prefix: str) -> list[str]:
        """The routes starting with ``prefix`` that have messages due."""

        async def work(conn: Conn) -> list[str]:
            rows = await (
                await conn.execute(
                    "SELECT DISTINCT route FROM rpc_outbox WHERE route LIKE %s "
                    "AND due_at <= clock_timestamp()",
                    (prefix.replace("%", r"\%").replace("_", r"\_") + "%",),
                )
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(work)
