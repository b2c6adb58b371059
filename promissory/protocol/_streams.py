"""Push messages: the poll streams connected to this node, and the loops that feed them.

A worker listening on ``GET /poll/{group}/{id}`` is reachable at ``poll://uni@group/id``
(itself) and ``poll://any@group`` (any one member of its group). Messages wait in the
``rpc_outbox`` table until a node that holds a stream for their route takes them (one node
takes each: an anycast message reaches one worker), so any node of a fleet can serve a worker,
and a message for a worker that is away waits for it. A message taken is leased (30 s,
``TAKE_LEASE``) and deleted once handed over, so one whose node died first is taken again
by another. A message for an HTTP address
(``resonate:target`` of ``http://…``) is posted by whichever node takes it; a post that fails
(no answer, 5xx, 429) is tried again after a backoff (1 s doubling to a minute, or the
server's ``Retry-After``) until ``OUTBOX_KEEP`` after it was first due, and one refused
(another 4xx) is dropped with a warning. The tick loop fires what is due
(timeouts of external promises, expired leases, retries, schedules) on every node; each row is
taken by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from datetime import timedelta

import httpx

from ..store import Delivery, RpcStore
from ._wire import execute_message, unblock_message

log = logging.getLogger("promissory.protocol")

TICK = 0.25
"""Seconds between looks for what is due (timeouts, leases, retries, schedules)."""
SAFETY_POLL = 1.0
"""Seconds between looks at the outbox when no NOTIFY came (a safety net)."""


POST_BACKOFF_MAX = timedelta(seconds=60)
"""The longest wait between two posts of one message to an HTTP address that fails; it is
tried until ``OUTBOX_KEEP`` after it was first put in the outbox."""


def post_again(status: int) -> bool:
    """Whether a post answered ``status`` is tried again: the server was unable (5xx) or
    asked for less (429); any other refusal (4xx) will not change by trying again.
    """
    return status >= 500 or status == 429


def post_backoff(attempts: int, retry_after: str | None = None) -> timedelta:
    """How long to wait before posting a message again after ``attempts`` earlier tries
    failed: 1 s, doubling up to ``POST_BACKOFF_MAX``, or longer when the server said so
    (``Retry-After`` in seconds, heeded up to 10 minutes).

    Example:
        >>> [post_backoff(n).total_seconds() for n in (0, 1, 2, 10)]
        [1.0, 2.0, 4.0, 60.0]
        >>> post_backoff(0, "30").total_seconds()
        30.0

    """
    delay = min(timedelta(seconds=2 ** min(attempts, 16)), POST_BACKOFF_MAX)
    if retry_after is not None and retry_after.strip().isdigit():
        delay = max(delay, min(timedelta(seconds=int(retry_after)), timedelta(minutes=10)))
    return delay


def _message(delivery: Delivery) -> bytes | None:
    """The push message a delivery carries (``None``: its promise was forgotten since)."""
    if delivery.kind == "execute":
        return execute_message(delivery.ref, delivery.version or 0)
    if delivery.promise is not None:
        return unblock_message(delivery.promise)
    return None


class Stream:
    """One connected poll stream: its address and the queue of messages to write to it."""

    def __init__(self, group: str, pid: str) -> None:
        self.group = group
        self.pid = pid
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    @property
    def route(self) -> str:
        """Its unicast route (``uni:group/pid``)."""
        return f"uni:{self.group}/{self.pid}"


class Hub:
    """The streams of this node, the delivery loop and the tick loop.

    Args:
        rpc: the store.
        capacity: the most streams held at once (``connect`` returns ``None`` past it).

    """

    def __init__(self, rpc: RpcStore, *, capacity: int = 1000) -> None:
        self.rpc = rpc
        self.capacity = capacity
        self._streams: list[Stream] = []
        self._turn = itertools.count()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    def connect(self, group: str, pid: str) -> Stream | None:
        """A new stream for ``group``/``pid``, or ``None`` at capacity."""
        if len(self._streams) >= self.capacity:
            return None
        stream = Stream(group, pid)
        self._streams.append(stream)
        self._wake.set()
        return stream

    def disconnect(self, stream: Stream) -> None:
        """Forget a stream that ended."""
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    def wake(self) -> None:
        """Look at the outbox now."""
        self._wake.set()

    def routes(self) -> list[str]:
        """The routes this node can deliver to now."""
        found = {s.route for s in self._streams} | {f"any:{s.group}" for s in self._streams}
        return sorted(found)

    def start(self) -> None:
        """Start the loops on the running event loop."""
        self._http = httpx.AsyncClient(timeout=10.0)
        self._tasks = [
            asyncio.create_task(self.rpc.listen(self.wake, self._stop)),
            asyncio.create_task(self._deliver_loop()),
            asyncio.create_task(self._tick_loop()),
        ]

    async def stop(self) -> None:
        """Stop the loops and end every stream."""
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for stream in self._streams:
            stream.queue.put_nowait(b"")
        if self._http is not None:
            await self._http.aclose()

    async def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SAFETY_POLL)
            self._wake.clear()
            try:
                while await self._deliver_once():
                    pass
            except Exception as exc:  # the store is away: the messages wait for the next look
                log.warning("promissory serve: delivering push messages failed: %s", exc)
                await asyncio.sleep(0.5)

    async def _deliver_once(self) -> bool:
        routes = self.routes() + await self.rpc.routes_waiting("http:")
        if not routes:
            return False
        taken = await self.rpc.take(routes)
        posts = [d for d in taken if d.route.startswith("http:")]
        handed = []
        waiting = []
        for delivery in taken:
            if delivery.route.startswith("http:"):
                continue
            if self._send(delivery):
                handed.append(delivery.seq)
            else:
                # Its stream ended since the routes were read: it waits for the next one.
                waiting.append(self.rpc.retry_later(delivery, timedelta(0)))
        # Posts go out together: one slow address does not hold up the others.
        done = await asyncio.gather(*(self._post(d) for d in posts), *waiting)
        handed += [d.seq for d, ended in zip(posts, done[: len(posts)], strict=True) if ended]
        await self.rpc.delivered(handed)
        return len(taken) > 0

    async def _post(self, delivery: Delivery) -> bool:
        """Post a message to its HTTP address; whether it is done with (posted, or refused
        for good), else it is due again after a backoff.
        """
        message = _message(delivery)
        if message is None:
            return True
        assert self._http is not None
        address = delivery.route[5:]
        try:
            response = await self._http.post(
                address, content=message, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            failure, retry_after = f"{type(exc).__name__}: {exc}", None
        else:
            if response.is_success:
                return True
            failure = f"HTTP {response.status_code}"
            if not post_again(response.status_code):
                log.warning(
                    "promissory serve: %s refused the %s message for %s (%s); it is dropped",
                    address,
                    delivery.kind,
                    delivery.ref,
                    failure,
                )
                return True
            retry_after = response.headers.get("Retry-After")
        delay = post_backoff(delivery.attempts, retry_after)
        (log.warning if delivery.attempts % 10 == 0 else log.debug)(
            "promissory serve: posting the %s message for %s to %s failed (%s, attempt %d); "
            "trying again in %.0f s",
            delivery.kind,
            delivery.ref,
            address,
            failure,
            delivery.attempts + 1,
            delay.total_seconds(),
        )
        await self.rpc.retry_later(delivery, delay)
        return False

    def _send(self, delivery: Delivery) -> bool:
        """Give a message to a stream here; whether one took it."""
        message = _message(delivery)
        if message is None:
            return True
        if delivery.route.startswith("uni:"):
            targets = [s for s in self._streams if s.route == delivery.route]
        else:
            group = delivery.route[4:]
            members = [s for s in self._streams if s.group == group]
            targets = [members[next(self._turn) % len(members)]] if members else []
        for stream in targets:
            stream.queue.put_nowait(message)
        return bool(targets)

    async def _tick_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.rpc.tick()
            except Exception as exc:
                log.warning("promissory serve: firing due timeouts and leases failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), TICK)
