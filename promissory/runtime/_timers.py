"""The timer service: settle promises whose timeout has come, in due order, when it comes.

It asks the store for the earliest pending timeout (one indexed lookup, never a scan), arms a
timer on the event loop for then, and sweeps what is due in batches; the sweep's settle events
wake whoever waits. The lookups and sweeps run on a worker thread (the host's executor), never
on the loop, which only keeps the timer. A NOTIFY that a timeout was created anywhere, or a
reconnect, makes it look again; a slow fallback poll covers anything it could otherwise miss.
Timeouts that came due while no process ran are overdue at start and fire at once. Given a
retention age, it also forgets finished runs older than that (``_retention``).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor

from ..errors import StoreError
from ..store import EventKind, OutageLog, Store, Subscription
from ._eventloop import LoopThread, Timer
from ._retention import Retention

log = logging.getLogger("promissory.runtime")


class TimerService:
    """Fires due timeouts and timers for one store."""

    def __init__(
        self,
        store: Store,
        loop: LoopThread,
        executor: Executor,
        *,
        fallback_poll: float = 30.0,
        batch: int = 1000,
        retention: float | None = None,
    ) -> None:
        self._store = store
        self._loop = loop
        self._executor = executor
        self._fallback = fallback_poll
        self._batch = batch
        self._lock = threading.Lock()
        self._timer: Timer | None = None
        self._busy = False
        self._again = False
        self._closed = False
        self._sub: Subscription | None = None
        self._outage = OutageLog(log, "timer service")
        self.fired = 0
        self.retention = Retention(store, retention) if retention is not None else None
        """Forgets finished runs older than ``retention`` seconds (``Runtime(retention=…)``)."""

    def start(self) -> None:
        """Subscribe to new timeouts and look for the first one."""
        self._sub = self._store.subscribe(
            EventKind.TIMER, [""], lambda kind, key, resync: self.kick()
        )
        self.kick()
        if self.retention is not None:
            self.retention.start()

    def kick(self) -> None:
        """Look at the store again soon (a timeout may have been created or come due)."""
        with self._lock:
            if self._closed:
                return
            if self._busy:
                self._again = True
                return
            self._busy = True
        try:
            self._executor.submit(self._run)
        except RuntimeError:  # the executor is shutting down
            with self._lock:
                self._busy = False

    def _run(self) -> None:
        delay: float | None = None
        try:
            while True:
                fired = self._store.sweep_timeouts(self._batch)
                self.fired += len(fired)
                if len(fired) < self._batch:
                    break
            delay = self._store.seconds_to_next_timeout()
            self._outage.ok()
        except StoreError as exc:  # the database is away: said once, not every second
            self._outage.failed(exc, "sweeping again every second")
            delay = 1.0
        except Exception:
            log.exception("promissory timer service: sweep failed; retrying")
            delay = 1.0
        finally:
            with self._lock:
                self._busy = False
                again, self._again = self._again, False
        if again:
            self.kick()
            return
        self._arm(self._fallback if delay is None else max(0.0, min(delay, self._fallback)))

    def _arm(self, delay: float) -> None:
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
            # A hair late rather than early: the sweep compares with the database's clock.
            self._timer = self._loop.call_later(delay + 0.002, self.kick)

    def close(self) -> None:
        """Stop firing."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
        if self._sub is not None:
            self._sub.cancel()
        if self.retention is not None:
            self.retention.close()
