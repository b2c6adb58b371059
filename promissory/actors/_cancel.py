"""Cancellation inside a handler: ``Canceled``, and the gate every new durable operation passes.

A message is canceled by settling it ``rejected_canceled`` (``rt.cancel``, ``promissory cancel``,
``Store.cancel`` from any process); its deadline passing settles it ``rejected_timedout``. Either
way the store cancels every pending promise under it in the same transaction, and the handler
running it learns of it from the settle event. Operations the journal already holds replay as
usual; the next *new* operation raises ``Canceled``, and so does a wait (a sleep, a promise, a
call) on something the cancel reached. Code may catch it to clean up: durable
operations are allowed again for ``cleanup_timeout`` seconds, then raise ``Canceled`` for
good. An async step in flight is cancelled (its task gets ``CancelledError``) and nothing is
kept for it; a sync one finishes, and its result is kept but not acted on.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import FencedError
from ..store import PromiseState, Signal, Store

__all__ = ["Canceled"]

log = logging.getLogger("promissory.actors")


class Canceled(BaseException):  # noqa: N818 - a signal, named for what happened
    """The message being handled was canceled, or its deadline passed.

    Derives from ``BaseException`` so ``except Exception`` does not swallow it; catch it by name
    to clean up.

    Attributes:
        reason: why, as recorded with the cancellation.
        deadline: the message's deadline passed (rather than someone canceling it).

    """

    def __init__(self, reason: str = "canceled", deadline: bool = False) -> None:
        super().__init__(reason, deadline)
        self.reason = reason
        self.deadline = deadline

    def __str__(self) -> str:
        return self.reason


class EndOfJournal(BaseException):  # noqa: N818 - a signal
    """A read-only replay reached the first operation its journal does not hold."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


class CancelState:
    """Whether the message a handler runs for was canceled, and what to do about it."""

    def __init__(self, message_id: str, store: Store, cleanup_timeout: float) -> None:
        self.message_id = message_id
        self.store = store
        self.cleanup_timeout = cleanup_timeout
        # A ``Signal``, not a ``threading.Event``: one is made for every message handled, and
        # an Event (a condition variable, its lock and a list of waiters) costs ten times more.
        self.requested = Signal()
        self.reason = "canceled"
        self.deadline = False
        self.cleanup_until: float | None = None
        self.dry = False
        """A read-only replay: the first operation not in the journal ends it."""
        self.node_alive: Callable[[], bool] | None = None
        """Whether the node still holds its lease (checked before new durable work)."""
        self.superseded: threading.Event | None = None
        """Set when the activation outlived its shutdown time and a newer activation may run:
        the handler is fenced off before any new durable work."""
        self._lock = threading.Lock()
        self._futures: set[concurrent.futures.Future[Any]] = set()

    def request(self) -> None:
        """The message was settled by someone else: cancel what runs, gate what comes."""
        self.requested.set()
        with self._lock:
            futures = list(self._futures)
        for future in futures:
            future.cancel()

    def settled_elsewhere(self, kind: str, key: str, resync: bool) -> None:
        """The store event callback that cancels the handler when its message is settled by
        someone else (subscribed to the message's ``settled`` events while it runs).

        A resync (the LISTEN connection came back; notifications may be lost) says nothing
        about this message: it is read again, off the listener's thread, and only a message
        that really was settled cancels the handler.
        """
        if not resync:
            self.request()
            return
        threading.Thread(target=self._recheck, name="promissory-recheck", daemon=True).start()

    def _recheck(self) -> None:
        try:
            found = self.store.find(self.message_id)
        except Exception as exc:  # the database is away: the handler's own ops will say
            log.info("could not re-read %s after a resync: %r", self.message_id, exc)
            return
        if found is None or found.state.settled:
            self.request()

    def track(self, future: concurrent.futures.Future[Any]) -> None:
        """An async step runs as ``future``: cancel it if the message is canceled."""
        with self._lock:
            self._futures.add(future)
        if self.requested.is_set():
            future.cancel()

    def untrack(self, future: concurrent.futures.Future[Any]) -> None:
        """The async step ended."""
        with self._lock:
            self._futures.discard(future)

    def gate(self, step: str) -> None:
        """Pass before new durable work at ``step``; raise ``Canceled`` if the message ended.

        Raises:
            EndOfJournal: in a read-only replay.
            FencedError: the activation outlived its shutdown time (``superseded``).
            Canceled: the message was canceled (or timed out), the first time, and again once
                the cleanup time is over.

        """
        if self.dry:
            raise EndOfJournal(step)
        if self.superseded is not None and self.superseded.is_set():
            raise FencedError(
                f"{step}: this activation outlived its shutdown time and is fenced off"
            )
        if self.node_alive is not None and not self.node_alive():
            if self.superseded is not None:
                self.superseded.set()
            raise FencedError(f"{step}: this node lost its lease; another may run the actor")
        if not self.requested.is_set():
            return
        if self.cleanup_until is None:
            self._load_reason()
            self.cleanup_until = time.monotonic() + self.cleanup_timeout
            raise Canceled(self.reason, self.deadline)
        if time.monotonic() > self.cleanup_until:
            raise Canceled(f"{self.reason} (and the time to clean up is over)", self.deadline)

    def _load_reason(self) -> None:
        promise = self.store.find(self.message_id)
        if promise is None:
            return
        self.deadline = promise.state is PromiseState.REJECTED_TIMEDOUT
        if self.deadline:
            self.reason = f"the deadline of {self.message_id} passed"
            return
        info = promise.error()
        if info is not None and info.message:
            self.reason = info.message
