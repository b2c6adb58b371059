"""Live pages: the store's changes, as server-sent events to the browsers that watch them.

One ``LiveFeed`` per server. It listens to the store's notifications (a settle, a message, a
timer: LISTEN/NOTIFY, on the store's own listener thread) and, twice a second, reads one cheap
counter of rows made (steps are kept by INSERTs, which send no NOTIFY). Each browser's
``/events`` stream follows a scope, an id prefix or ``*``, and is sent ``change`` when
something in it changed; the page then fetches its fresh ``<main>``. This module is where the
listener's thread meets the server's event loop (``call_soon_threadsafe``), and nowhere else.

Example:
    >>> feed = LiveFeed(store)  # doctest: +SKIP
    >>> await feed.start()  # doctest: +SKIP
    >>> async for chunk in feed.stream("agent/run/42"): ...  # doctest: +SKIP

"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..store import EventKind, Store, Subscription, views as _queries

log = logging.getLogger("promissory.ui")

POLL = 0.5
"""Seconds between looks at the counter of rows made."""
KEEPALIVE = 15.0
"""Seconds of silence after which a stream sends a comment, so proxies keep it open."""
SPACING = 0.25
"""Least seconds between two ``change`` events of one stream (a burst of steps is one)."""

_EVENTS = (EventKind.SETTLED, EventKind.MESSAGE, EventKind.TIMER, EventKind.ENDING)


class LiveFeed:
    """The store's changes, fanned out to every open stream."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queues: set[asyncio.Queue[tuple[str, str] | None]] = set()
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        """Subscribe to the store's events and start looking at the counter."""
        self._loop = asyncio.get_running_loop()
        for kind in _EVENTS:
            self._subs.append(await run_in_threadpool(self.store.subscribe, kind, [""], self._on))
        self._task = asyncio.create_task(self._poll(), name="promissory-ui-poll")

    async def close(self) -> None:
        """End every stream and stop listening."""
        self._closed = True
        for sub in self._subs:
            sub.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for q in list(self._queues):
            q.put_nowait(None)

    def _on(self, kind: str, key: str, resync: bool) -> None:
        # On the store's listener thread: hand over to the loop, never block.
        loop = self._loop
        if loop is not None and not self._closed:
            loop.call_soon_threadsafe(self._publish, kind, "" if resync else key)

    def _publish(self, kind: str, key: str) -> None:
        for q in self._queues:
            if q.qsize() < 1000:
                q.put_nowait((kind, key))

    async def _poll(self) -> None:
        last: tuple[Any, ...] | None = None
        while not self._closed:
            now: tuple[Any, ...] | None
            try:
                now = await run_in_threadpool(_queries.changes, self.store)
            except Exception as exc:  # the database is away: the streams wait, and say nothing
                log.debug("promissory ui: could not read changes: %r", exc)
                now = last
            if last is not None and now != last:
                self._publish("made", "")
            last = now
            await asyncio.sleep(POLL)

    async def stream(self, watch: str, since: str | None = None) -> AsyncIterator[str]:
        """Server-sent events for a page that shows ``watch`` (an id prefix, or ``*``).

        ``since`` is the page's stamp (``_queries.version``, read as it was made): if what it
        shows changed before the stream began, the first event says so at once.
        """
        q: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._queues.add(q)
        scoped: tuple[Any, ...] | None = None
        try:
            yield "retry: 2000\n: promissory live\n\n"
            if watch != "*":
                scoped = await run_in_threadpool(_queries.scoped_changes, self.store, watch)
            if since:
                stamp = await run_in_threadpool(_queries.version, self.store, watch)
                if stamp != since:
                    yield "event: change\ndata: {}\n\n"
            while not self._closed:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                items = [item]
                while not q.empty():
                    more = q.get_nowait()
                    if more is None:
                        return
                    items.append(more)
                changed = watch == "*"
                if not changed:
                    changed = any(_touches(kind, key, watch) for kind, key in items)
                    if not changed and any(kind == "made" or not key for kind, key in items):
                        now = await run_in_threadpool(_queries.scoped_changes, self.store, watch)
                        changed, scoped = now != scoped, now
                if changed:
                    yield "event: change\ndata: {}\n\n"
                    await asyncio.sleep(SPACING)
        finally:
            self._queues.discard(q)


def _touches(kind: str, key: str, watch: str) -> bool:
    """Whether an event of ``kind`` for ``key`` concerns what lies under ``watch``."""
    if kind == "message":
        key = key.partition("\t")[0]  # the recipient actor
    if not key:
        return False
    base = watch.rstrip("/")
    return key == base or key.startswith(base + "/")
