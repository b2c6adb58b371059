"""LISTEN for what other processes did to the store, and publish it in this one.

One thread holds one connection that LISTENs on the store's channel. The trigger on
``promises`` sends ``s<id>`` when a promise settles, ``m<actor id><TAB><seq><TAB><holder><TAB>
<type>`` when a message is created for an actor (so a node can tell a message it already has
from a new one, and which node is to run it; not for one its sending node hands to its own
actor itself, see ``send_op(handed=)``), and ``t`` when a promise with a timeout is created.
Notifications are read from libpq directly (``_libpq``): psycopg's ``notifies`` lets the GIL go
twice per wake-up on top of the wait itself, and with many threads at work each time cost a
wait for it back (BENCHMARKS.md, "The message path", fourteenth pass).
When the connection is lost the thread says so once (``OutageLog``), reconnects with backoff,
LISTENs again, says it is back, and asks every subscriber to re-check.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from ._connection import backoff_delay, close_quietly, connect
from ._events import EventHub
from ._libpq import load
from ._ops import Event, EventKind
from ._outage import OutageLog

log = logging.getLogger("promissory.store")

_KINDS = {
    "s": EventKind.SETTLED,
    "m": EventKind.MESSAGE,
    "t": EventKind.TIMER,
    "e": EventKind.ENDING,
    "a": EventKind.ADOPTED,
    "l": EventKind.LIVE,
}
_POLL_MS = 100
"""Milliseconds between looks at the stop flag while waiting for notifications."""
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def parse_notification(payload: str) -> Event | None:
    """The event a NOTIFY payload announces, or ``None`` for a payload this code does not know."""
    kind = _KINDS.get(payload[:1])
    return (kind, payload[1:]) if kind else None


class Listener:
    """The LISTEN thread of one store."""

    def __init__(self, dsn: str, channel: str, hub: EventHub, *, name: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._hub = hub
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the first LISTEN is in place."""
        # Asked at every subscription and wait (twice a message): once ready, a flag read.
        return self._ready.is_set() or self._ready.wait(timeout)

    def close(self) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        attempt = 0
        first = True
        outage = OutageLog(log, "listener")
        while not self._stop.is_set():
            try:
                conn = connect(
                    self._dsn, deadline=time.monotonic() + 5, what="the store's listener"
                )
            except Exception as exc:
                outage.failed(exc, "reconnecting")
                time.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            self._conn = conn
            try:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                attempt = 0
                outage.ok()
                self._ready.set()
                if not first:
                    # Notifications sent while we were away are lost: everyone re-checks.
                    self._hub.resync()
                first = False
                self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    outage.failed(exc, "reconnecting")
                    time.sleep(backoff_delay(attempt))
                    attempt += 1
            finally:
                close_quietly(conn, "the store's listener")
                self._conn = None

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        """Publish what is heard on ``conn`` until stopped; raises when the connection fails."""
        # What came with LISTEN's own answer psycopg kept aside: taken first.
        for note in conn.notifies(timeout=0):
            self._heard(note.payload)
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        take = load().notifies
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        while not self._stop.is_set():
            # A short wait, so that close() returns promptly (it cannot interrupt the wait);
            # an idle turn of the loop is a local timer and sends nothing.
            ready = poller.poll(_POLL_MS)
            if not ready:
                continue
            pgconn.consume_input()  # raises when the connection is lost
            payloads = take(pgconn)
            for payload in payloads:
                self._heard(payload.decode(encoding))
            if not payloads and ready[0][1] & _GONE:
                raise psycopg.OperationalError(
                    f"the listener's connection was closed: {pgconn.get_error_message()}"
                )

    def _heard(self, payload: str) -> None:
        event = parse_notification(payload)
        if event is not None:
            self._hub.heard(event)
