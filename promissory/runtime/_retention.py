"""Retention: forget finished runs older than an age, now and then, on a thread of its own.

The timer service starts it when the runtime is given ``retention``. Each pass asks the store
to forget every top-level run that finished longer ago than the age (``Store.forget_finished``:
the database's clock, bounded batches, one transaction per run, skipping what another node is
forgetting), so any number of nodes may run it; a pass that fails is logged and tried again at
the next one. The first pass runs at start, then one every tenth of the age (at least every
second, at most every hour).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from ..errors import InvalidInputError
from ..store import Store

log = logging.getLogger("promissory.runtime")

__all__ = ["Retention", "retention_seconds"]


def retention_seconds(retention: timedelta | float) -> float:
    """``retention`` in seconds, checked.

    Raises:
        InvalidInputError: it is not a positive duration.

    """
    seconds = retention.total_seconds() if isinstance(retention, timedelta) else retention
    if not (isinstance(seconds, int | float) and seconds > 0):
        raise InvalidInputError(
            f"retention must be a positive timedelta or number of seconds, not {retention!r}"
        )
    return float(seconds)


class Retention:
    """Forgets the finished runs of one store that are older than ``older_than`` seconds."""

    def __init__(
        self, store: Store, older_than: float, *, every: float | None = None, batch: int = 100
    ) -> None:
        self._store = store
        self.older_than = older_than
        self.every = every if every is not None else min(max(older_than / 10, 1.0), 3600.0)
        self._batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promissory-retention", daemon=True)
        self.forgotten = 0
        """Runs forgotten by this node so far."""

    def start(self) -> None:
        """Run the first pass now, and the others every ``every`` seconds."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                forgotten = self._store.forget_finished(
                    self.older_than, batch=self._batch, keep_going=lambda: not self._stop.is_set()
                )
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("retention pass failed (%s); trying again in %g s", exc, self.every)
            else:
                self.forgotten += len(forgotten)
                if forgotten:
                    log.info(
                        "retention: forgot %d run(s) finished over %s ago: %s",
                        len(forgotten),
                        timedelta(seconds=self.older_than),
                        ", ".join(forgotten[:5]) + (", …" if len(forgotten) > 5 else ""),
                    )
            self._stop.wait(self.every)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the batch in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
