"""The runtime's event loop thread: the one place pykka threads and the loop meet.

One uvloop loop (the standard asyncio loop where uvloop is not available) runs in a thread of
its own. Async steps run on it, and so do the runtime's timers (``call_later``): the timer
service's next look at the store, actors' idle and restart timers, retries after a fault.
Nothing that blocks runs on it: a timer that fires hands its work to a worker thread (the
timer service sweeps due timeouts, and the host touches the store, on the host's executor).
Code on other threads reaches the loop only through ``LoopThread``: ``call_soon``,
``call_later``, ``submit`` and ``run`` (which blocks the calling thread, never the loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop where uvloop is installed, else the standard one."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class LoopThread:
    """An event loop running in a daemon thread until ``close``."""

    def __init__(self, name: str = "promissory-loop") -> None:
        # The loop is made in its own thread, and waited for at its first use: importing
        # uvloop and starting the thread overlap whatever the caller does next (the runtime
        # opens its store meanwhile).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (once it runs)."""
        self._ready.wait()
        assert self._loop is not None
        return self._loop

    def _run(self) -> None:
        loop = self._loop = new_event_loop()
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop; block the calling thread until it finishes."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called on the loop's own thread would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop and return a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop thread, soon."""
        self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` on the loop thread after ``delay`` seconds; cancellable."""
        timer = Timer()
        self.loop.call_soon_threadsafe(timer._arm, self.loop, delay, fn, args)
        return timer

    def close(self) -> None:
        """Stop the loop and wait for its thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Timer:
    """A ``call_later`` that can be canceled from any thread, even before it is armed."""

    __slots__ = ("_handle", "_canceled", "_loop")

    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self._canceled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _arm(
        self, loop: asyncio.AbstractEventLoop, delay: float, fn: Callable[..., Any], args: Any
    ) -> None:
        self._loop = loop
        if not self._canceled:
            self._handle = loop.call_later(delay, fn, *args)

    def cancel(self) -> None:
        """Cancel the call if it has not happened yet."""
        self._canceled = True
        handle, loop = self._handle, self._loop
        if handle is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handle.cancel)
