"""``Store``: durable promises in Postgres, with the semantics of the durable-promise protocol.

The id is the idempotency key: creating an existing id returns the existing promise unchanged,
and settling a settled promise returns it as it is, saying it did nothing. Once a promise's
timeout has passed it reads and settles as timed out. Writes from many threads are committed
together (group commit) and a call returns only once its write is durable. Lost connections
are re-made with backoff; a caller sees ``StoreUnavailableError`` only after
``reconnect_timeout`` seconds without the database.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from ..errors import (
    ActorNotFoundError,
    InvalidInputError,
    PromiseNotFoundError,
    SchemaTooNewError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
)
from . import _forget, _promises as q
from ._codec import encode
from ._connection import backoff_delay, configure, connect, is_disconnect, is_transient, redact
from ._events import Callback, EventHub, Expectation, Subscription
from ._failures import error_info
from ._forget import Forgotten
from ._handoff import Signal, WriteFuture
from ._listener import Listener
from ._ops import Event, EventKind, Op
from ._outage import OutageLog, quiet_pool_warnings
from ._reads import Reads
from ._records import ActorCancel, ErrorInfo, Outcome, Page, Promise, PromiseKind, PromiseState
from ._schema import LATEST, channel_for, current_schema, migrate
from ._supervision import mark_ending_op
from ._validate import (
    MAX_PAGE,
    MAX_READ_ID_LENGTH,
    Timeout,
    check_id,
    check_tags,
    timeout_parts,
)
from ._writer import Writer

T = TypeVar("T")
log = logging.getLogger("promissory.store")

__all__ = ["Store"]


class Store(Reads):
    """Durable promises in one Postgres database (one schema of it).

    Args:
        dsn: a libpq connection string or URI. The tables go to the connection's current schema.
        reconnect_timeout: how long an operation keeps retrying while the database is
            unreachable before it raises ``StoreUnavailableError``.
        pool_size: connections kept for reads.
        migrate: bring the schema up to date on open (the default). With ``False`` the store
            only checks the version.
        connect_timeout: how long opening waits for the database (default:
            ``reconnect_timeout``); a command line tool wants to give up sooner than a node.

    Example:
        >>> with Store("postgresql://localhost/app") as store:  # doctest: +SKIP
        ...     store.create("approval/7", timeout=3600)
        ...     store.resolve("approval/7", {"approved": True})
        ...     store.get("approval/7").value_as(dict)
        {'approved': True}

    """

    def __init__(
        self,
        dsn: str,
        *,
        reconnect_timeout: float = 30.0,
        pool_size: int = 8,
        migrate: bool = True,
        connect_timeout: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.reconnect_timeout = reconnect_timeout
        self._read_only: str | None = None
        first = connect_timeout if connect_timeout is not None else reconnect_timeout
        conn = connect(dsn, deadline=time.monotonic() + first, what="the promise store")
        try:
            self.schema = current_schema(conn)
            try:
                self.version = _migrate(conn) if migrate else _check_version(conn)
            except SchemaTooNewError as exc:
                self._read_only = str(exc)
                self.version = LATEST
        finally:
            conn.close()
        self.channel = channel_for(self.schema)
        self.events = EventHub()
        quiet_pool_warnings()  # an outage is told once, by the reads below, not per connection
        self._outage = OutageLog(log, "store")
        self._lost = False  # a pooled connection was lost and none has served since
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=configure,
            open=True,
            name="promissory-read",
        )
        self._writer = Writer(
            dsn,
            reconnect_timeout=reconnect_timeout,
            on_events=self.events.publish,
            settling=self.events.settling,
            outage=self._outage,
        )
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False
        self.reads = 0
        """Queries run on the read pool so far (the message path's figures count them)."""

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish queued writes and close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        if self._listener is not None:
            self._listener.close()
        self._pool.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    @property
    def read_only(self) -> bool:
        """Whether the store refuses writes (the database holds a newer schema)."""
        return self._read_only is not None

    # -- promises ----------------------------------------------------------------------------

    def create(
        self,
        id: str,
        *,
        param: Any = None,
        timeout: Timeout = None,
        tags: Mapping[str, str] | None = None,
        timer: bool = False,
        owner: str | None = None,
    ) -> Outcome:
        """Create a pending promise, or return the one that has this id already, unchanged.

        Args:
            id: the promise id and idempotency key.
            param: any msgspec-encodable value, stored as JSON.
            timeout: seconds or a ``timedelta`` from the database's now, or an aware
                ``datetime``; a time already past creates the promise timed out.
            tags: a mapping of strings to strings.
            timer: a timer resolves (rather than times out) when its timeout passes.
            owner: the id of a promise (a run, a message) this one belongs to, whatever its
                own id: canceling or timing out the owner cancels it. A pending promise that
                has no owner yet takes this one; an owner once set never changes.

        Raises:
            InvalidInputError: a bad id, tags, timeout, or a param that cannot be encoded.

        """
        check_id(id)
        tags_json = encode(check_tags(tags), what="tags")
        param_json = encode(param, what="param") if param is not None else None
        secs, at = timeout_parts(timeout)
        if timer and secs is None and at is None:
            raise InvalidInputError("a timer needs a timeout")
        kind = PromiseKind.TIMER if timer else PromiseKind.PROMISE
        if owner is not None:
            check_id(owner, what="owner id")
        op = q.create_op(
            id, param=param_json, tags=tags_json, secs=secs, at=at, kind=kind, owner=owner
        )
        return self.execute(op)  # type: ignore[no-any-return]

    def resolve(self, id: str, value: Any = None) -> Outcome:
        """Resolve a pending promise with ``value``; a settled promise is returned as it is.

        Raises:
            PromiseNotFoundError: no promise has this id (nothing is written).
            InvalidInputError: a bad id or a value that cannot be encoded.

        """
        check_id(id)
        value_json = encode(value, what="value") if value is not None else None
        return self.settle(id, PromiseState.RESOLVED, value_json)

    def reject(self, id: str, error: BaseException | ErrorInfo | str | None = None) -> Outcome:
        """Reject a pending promise with ``error``; a settled promise is returned as it is."""
        check_id(id)
        info = _as_error_info(error, "promissory.errors.PromiseFailedError", "rejected")
        return self.settle(id, PromiseState.REJECTED, encode(info, what="error"))

    def cancel(self, id: str, reason: str | None = None) -> Outcome:
        """Cancel a pending promise; a settled promise is returned as it is."""
        check_id(id)
        info = _cancel_info(id, reason)
        return self.settle(id, PromiseState.REJECTED_CANCELED, encode(info, what="reason"))

    def cancel_actor(self, id: str, reason: str | None = None) -> ActorCancel:
        """Cancel an actor and its whole subtree, durably.

        In one transaction, every pending message of the actor is canceled (and, by the
        cascade, every pending promise under them) and the actor is marked to end. The runtime
        hosting it ends the tree (children first, letting their handlers clean up); one that
        dies half-way finishes on its next start, and a cancel kept while no runtime runs takes
        effect on the next start.

        Example:
            >>> store.cancel_actor("research/lead", reason="over budget")  # doctest: +SKIP
            ActorCancel(actor='research/lead', applied=True, canceled=['research/lead/m/7'])

        Raises:
            ActorNotFoundError: no actor has this id.

        """
        check_id(id)
        found, marked, canceled = self.execute(
            mark_ending_op(id, self.channel, encode(_cancel_info(id, reason), what="reason"))
        )
        if not found:
            raise ActorNotFoundError(f"no actor has the id {id!r}")
        return ActorCancel(id, marked, list(canceled))

    def forget(self, id: str, *, force: bool = False, timeout: float = 60.0) -> Forgotten:
        """Delete a finished run and everything of it, in one transaction.

        Gone are: the run's promise and its continuations' (``ID~resumeN``), every promise
        under those ids (steps, sub-agent runs), every promise they own (what they created or
        first waited on with ``ctx.promise``, whatever its id), and the run's actor rows (its
        own, those under its id, and below them in the tree). The id can then be run anew.
        An id that is not there is forgotten already: the result says nothing was deleted.

        Args:
            id: the run's id (a promise id).
            force: cancel what is still pending first (as ``cancel`` does), wait up to
                ``timeout`` seconds for the run's actors on live nodes to end (their handlers
                clean up), then forget it. An actor no live node holds runs nowhere; its row
                goes with the rest.
            timeout: how long a forced forget waits for the actors to end.

        Raises:
            RunNotFinishedError: the run, or something under it or owned by it, is pending
                or running (naming what), and ``force`` is not given; or, forced, its actors
                did not end within ``timeout`` (it stays canceled, and is not forgotten).

        Example:
            >>> store.forget("agent/run/42")  # doctest: +SKIP
            Forgotten(id='agent/run/42', runs=['agent/run/42'], promises=9, actors=2, canceled=0)

        """
        check_id(id, limit=MAX_READ_ID_LENGTH)
        return _forget.forget(self, id, force=force, timeout=timeout)

    def forget_finished(
        self,
        older_than: float,
        *,
        batch: int = 100,
        keep_going: Callable[[], bool] | None = None,
    ) -> list[str]:
        """Forget every top-level run that finished more than ``older_than`` seconds ago.

        A run here is a message addressed to the actor made for it, with no parent actor (an
        agent run started with ``rt.start``/``rt.run``); it goes with its continuations, once
        all of them finished before the age (by the database's clock) and nothing of theirs is
        pending or running. Batches of ``batch`` candidates, each forgotten in a transaction of
        its own; safe to run on several nodes at once; ``keep_going`` is asked before each
        batch. Returns the runs forgotten.
        """
        if not older_than >= 0:
            raise InvalidInputError(f"older_than must be ≥ 0 seconds, not {older_than!r}")
        return _forget.forget_finished(self, older_than, batch=batch, keep_going=keep_going)

    def settle(self, id: str, state: PromiseState, value_json: str | None) -> Outcome:
        """Settle ``id`` into ``state`` with an already-encoded JSON value."""
        if not state.settled or state is PromiseState.REJECTED_TIMEDOUT:
            raise InvalidInputError(f"a promise cannot be settled as {state.value}")
        return self.execute(q.settle_op(id, state, value_json))  # type: ignore[no-any-return]

    def get(self, id: str) -> Promise:
        """The promise with this id.

        Raises:
            PromiseNotFoundError: no promise has this id.

        """
        promise = self.find(id)
        if promise is None:
            raise PromiseNotFoundError(f"no promise has the id {id!r}", id)
        return promise

    def find(self, id: str, *, timeout: float | None = None) -> Promise | None:
        """The promise with this id, or ``None`` (see ``read`` for ``timeout``)."""
        check_id(id, limit=MAX_READ_ID_LENGTH)

        def read(conn: psycopg.Connection[Any]) -> Promise | None:
            row = conn.execute(q._GET, (id,)).fetchone()
            return q.promise_from_row(row) if row else None

        return self.read(read, timeout=timeout)

    def get_many(self, ids: Sequence[str]) -> dict[str, Promise]:
        """The promises among ``ids`` that exist, by id, in one query.

        Raises:
            InvalidIdError: one of ``ids`` is not a usable id.

        """
        for id in ids:
            check_id(id, limit=MAX_READ_ID_LENGTH)

        def read(conn: psycopg.Connection[Any]) -> dict[str, Promise]:
            rows = conn.execute(
                f"SELECT {q.COLUMNS} FROM promises WHERE id = ANY(%s)", (list(ids),)
            ).fetchall()
            return {r[0]: q.promise_from_row(r) for r in rows}

        return self.read(read) if ids else {}

    def search(
        self,
        *,
        prefix: str | None = None,
        state: PromiseState | str | Sequence[PromiseState | str] | None = None,
        tags: Mapping[str, str] | None = None,
        kind: PromiseKind | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Promises matching every filter given, oldest first, a page at a time.

        Example:
            >>> page = store.search(prefix="agent/run/42/", state="pending")  # doctest: +SKIP
            >>> more = store.search(prefix="agent/run/42/", cursor=page.cursor)  # doctest: +SKIP

        """
        if not (isinstance(limit, int) and 1 <= limit <= MAX_PAGE):
            raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}, not {limit!r}")
        states = _as_states(state)
        try:
            after = int(cursor) if cursor is not None else None
        except ValueError:
            raise InvalidInputError(f"not a search cursor: {cursor!r}") from None
        query, params = q.search_query(
            prefix=prefix,
            states=states,
            tags=encode(check_tags(tags), what="tags") if tags else None,
            kind=_as_kind(kind),
            created_after=created_after,
            created_before=created_before,
            after_seq=after,
            limit=limit,
        )
        rows = self.read(lambda conn: conn.execute(query, params).fetchall())
        return q.page_from_rows(rows, limit)

    def wait(
        self,
        id: str,
        timeout: float | None = None,
        *,
        expected: Expectation | None = None,
        pending: Promise | None = None,
    ) -> Promise:
        """Block until the promise is settled (or times out) and return it.

        Wakes on the settle itself, in this process or another (LISTEN/NOTIFY), and at the
        promise's own timeout; never polls in a loop. Returns or raises within ``timeout``
        (and a few milliseconds) whatever the database does.

        ``expected`` (from ``expect``, registered before the promise was written) and
        ``pending`` (the promise as its writer got it back) spare the reads: a settle written
        in this process is taken from the expectation.

        Raises:
            PromiseNotFoundError: no promise has this id.
            TimeoutError: ``timeout`` seconds passed first (with the promise still pending, or
                the database unreachable: the message says which).

        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if self._closed:
            raise StoreError("the store is closed")
        if expected is not None and expected.promise is not None:
            return expected.promise  # type: ignore[no-any-return]
        self._ensure_listener(left())
        sub: Subscription | None = None
        if expected is None:
            woken = Signal()
            sub = self.events.subscribe(
                EventKind.SETTLED, [id], lambda kind, key, resync: woken.set()
            )
        else:
            woken = expected.woken  # its owner cancels it
        try:
            while True:
                if expected is not None and expected.promise is not None:
                    return expected.promise  # type: ignore[no-any-return]
                if pending is not None:
                    promise, pending = pending, None
                    until = _seconds_until(promise.timeout_at)
                    if until is not None and until <= 0:
                        continue  # past its deadline: read what the database says
                else:
                    promise = self._find_for_wait(id, left, timeout, deadline)
                if promise.state.settled:
                    return promise
                pause = _seconds_until(promise.timeout_at)
                remaining = left()
                if remaining is not None:
                    if remaining <= 0:
                        raise TimeoutError(f"promise {id!r} still pending after {timeout} s")
                    pause = remaining if pause is None else min(pause, remaining)
                woken.wait(pause)
                woken.clear()
        finally:
            if sub is not None:
                sub.cancel()

    def _find_for_wait(
        self,
        id: str,
        left: Callable[[], float | None],
        timeout: float | None,
        deadline: float | None,
    ) -> Promise:
        try:
            promise = self.find(id, timeout=left())
        except StoreUnavailableError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"promise {id!r}: no answer within {timeout} s; the database "
                    f"is unreachable ({exc})"
                ) from exc
            raise
        if promise is None:
            raise PromiseNotFoundError(f"no promise has the id {id!r}", id)
        return promise

    def expect(self, id: str) -> Expectation:
        """Wait for promise ``id`` from now on, before writing what creates or settles it:
        pass the ``Expectation`` to ``wait``, or ``cancel()`` it.
        """
        if self._closed:
            raise StoreError("the store is closed")
        return self.events.expect(id)

    def mark(self) -> int:
        """A point in this process's log of settles (see ``settled_since``)."""
        return self.events.mark()

    def settled_since(self, id: str, mark: int) -> bool:
        """Whether promise ``id`` may have been settled after ``mark`` (``False``: surely not,
        as far as this process has heard; a settle in another process may not have reached
        it yet).
        """
        return self.events.settled_since(id, mark)

    # -- timeouts ----------------------------------------------------------------------------

    def sweep_timeouts(self, limit: int = 1000) -> list[Promise]:
        """Settle up to ``limit`` overdue pending promises, oldest first; return them."""
        return self.execute(q.sweep_op(limit))  # type: ignore[no-any-return]

    def seconds_to_next_timeout(self) -> float | None:
        """Seconds until the earliest pending timeout (negative if overdue), ``None`` if none."""
        # The timer service's look ahead: housekeeping, not counted in ``reads``.
        row = self.read(lambda conn: conn.execute(q.NEXT_TIMEOUT).fetchone(), background=True)
        return float(row[0]) if row and row[0] is not None else None

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, kind: EventKind, keys: Iterable[str], callback: Callback) -> Subscription:
        """Call ``callback(kind, key, resync)`` on events of ``kind`` for ``keys``.

        Kinds (``EventKind``): ``SETTLED`` (key: promise id), ``MESSAGE`` (key: recipient actor
        id, its seq, the node holding it and its type, tab-separated), ``TIMER`` (key: ``""``),
        ``ADOPTED`` (key: a dead node's id, whose actors were handed back), ``ENDING`` (key:
        the id of an actor marked to end, see ``cancel_actor``), ``LIVE`` (key: what was
        announced, see ``announce``). ``keys=[""]`` subscribes to
        every key of the kind.
        Callbacks run on the store's threads and must not block.
        """
        if self._closed:
            raise StoreError("the store is closed")  # and must not start a listener again
        self._ensure_listener()
        return self.events.subscribe(kind, keys, callback)

    def announce(self, keys: Sequence[str], *, local: Sequence[str] | None = None) -> None:
        """Announce ``keys`` as ``LIVE`` events to every process listening on this store
        (one NOTIFY each, in one round trip; nothing is kept), and deliver ``local`` (default:
        the same keys) to this process's subscribers at once. A key must be at most 7,900
        bytes of UTF-8 (NOTIFY's limit); a listener that was away misses what was announced
        meanwhile (its subscribers are told to resync).

        Raises:
            InvalidInputError: a key is too long.

        """
        for key in keys:
            if len(key.encode()) > 7900:
                raise InvalidInputError(f"an announcement is at most 7900 bytes, not {len(key)}")
        self.events.publish([(EventKind.LIVE, k) for k in (keys if local is None else local)])
        if keys:
            payloads = ["l" + k for k in keys]
            self.read(
                lambda conn: conn.execute(
                    "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                    (self.channel, payloads),
                ).fetchall(),
                background=True,  # a NOTIFY, not a read: not counted in ``reads``
            )

    def start_listening(self) -> None:
        """Start the LISTEN connection now, without waiting for it (``subscribe`` waits): a
        runtime opening does its other work while it connects.
        """
        if self._closed:
            raise StoreError("the store is closed")
        self._start_listener()

    def _start_listener(self) -> Listener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(
                    self.dsn, self.channel, self.events, name="promissory-listener"
                )
            return self._listener

    def _ensure_listener(self, timeout: float | None = None) -> None:
        listener = self._listener or self._start_listener()
        listener.wait_ready(self.reconnect_timeout if timeout is None else timeout)

    # -- plumbing for the layers above -------------------------------------------------------

    def submit(self, op: Op) -> WriteFuture[Any]:
        """Queue a write for the next group commit; the future completes once it is durable."""
        if self._read_only is not None:
            raise SchemaTooNewError(self._read_only)
        return self._writer.submit(op)

    def execute(self, op: Op, timeout: float | None = None) -> Any:
        """Run a write through group commit and return its result once it is durable.

        With ``timeout``, the call returns within it whatever the database does: a write not
        yet sent is withdrawn (nothing is written); one already sent may still commit.

        Raises:
            StoreUnavailableError: ``timeout`` seconds passed first (the message says whether
                the write was withdrawn or its outcome is unknown).

        """
        if timeout is None:
            if self._read_only is not None:
                raise SchemaTooNewError(self._read_only)
            return self._writer.run(op)
        future = self.submit(op)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise StoreUnavailableError(
                    f"the database did not take the write within {timeout:g} s; it was "
                    "withdrawn: nothing was written"
                ) from None
            try:  # in flight: a moment more may tell
                return future.result(0.05)
            except concurrent.futures.TimeoutError:
                raise StoreUnavailableError(
                    f"the database did not confirm the write within {timeout:g} s; it was "
                    "sent and may still be kept (an id makes a retry safe)"
                ) from None

    def read(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        timeout: float | None = None,
        background: bool = False,
    ) -> T:
        """Run ``fn`` on a pooled autocommit connection, retrying it if the connection is lost,
        for ``reconnect_timeout`` seconds (or ``timeout``, if shorter). A ``background`` read
        (the node's housekeeping: its looks at the fleet, the next timeout, the next
        schedule) is not counted in ``reads``.

        After a lost connection, while the pool is still reconnecting (with a backoff of its
        own), a read that finds no pooled connection at once makes a connection of its own:
        a database that is back answers at once.
        """
        if self._closed:
            # Else the closed pool reads as a lost connection, retried until the deadline.
            raise StoreError("the store is closed")
        waits = self.reconnect_timeout if timeout is None else min(timeout, self.reconnect_timeout)
        deadline = time.monotonic() + waits
        attempt = 0
        while True:
            conn = None
            began = time.monotonic()
            try:
                wait = max(0.1, deadline - time.monotonic())
                with self._pool.connection(timeout=min(wait, 0.1) if self._lost else wait) as conn:
                    if not background:
                        self.reads += 1
                    result = fn(conn)
                self._lost = False
                self._outage.ok(began)
                return result
            except psycopg_pool.PoolTimeout as exc:
                if self._lost:
                    try:
                        return self._read_direct(fn, deadline)
                    except StoreUnavailableError:
                        pass  # still away: wait and try again, as below
                self._lost = True  # no connection at all for a whole wait: treated as lost
                self._outage.failed(exc, f"retrying for up to {self.reconnect_timeout:g} s", began)
                if time.monotonic() >= deadline:
                    raise StoreUnavailableError(
                        f"the promise store could not reach {redact(self.dsn)} for {waits:g} s"
                    ) from exc
            except psycopg.Error as exc:
                if is_transient(exc):
                    if time.monotonic() >= deadline:
                        raise StoreBusyError(
                            f"the database kept stopping a read for {waits:g} s: {exc}"
                        ) from exc
                elif not is_disconnect(exc, conn):
                    raise StoreError(f"the database refused a read: {exc}") from exc
                else:
                    self._lost = True
                    self._outage.failed(
                        exc, f"retrying for up to {self.reconnect_timeout:g} s", began
                    )
                    if time.monotonic() >= deadline:
                        raise StoreUnavailableError(
                            f"the promise store lost its connection to {redact(self.dsn)}: {exc}"
                        ) from exc
            time.sleep(min(backoff_delay(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1

    def _read_direct(self, fn: Callable[[psycopg.Connection[Any]], T], deadline: float) -> T:
        began = time.monotonic()
        conn = connect(self.dsn, deadline=min(deadline, time.monotonic() + 1.0), what="reads")
        try:
            result = fn(conn)
        except psycopg.Error as exc:
            if is_disconnect(exc, conn):
                raise StoreUnavailableError(f"lost a read's connection: {exc}") from exc
            raise StoreError(f"the database refused a read: {exc}") from exc
        finally:
            conn.close()
        self._outage.ok(began)
        return result

    def publish(self, events: Sequence[Event]) -> None:
        """Deliver events to this process's subscribers, as if a batch had committed them."""
        self.events.publish(events)

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(batches, ops) committed so far by the group-commit writer."""
        return self._writer.batches, self._writer.ops


def _migrate(conn: psycopg.Connection[Any]) -> int:
    return migrate(conn)


def _check_version(conn: psycopg.Connection[Any]) -> int:
    from ._schema import installed_version

    version = installed_version(conn)
    if version > LATEST:
        raise SchemaTooNewError(
            f"the database schema is at version {version}, newer than this promissory knows "
            f"({LATEST}); upgrade promissory before writing to this database"
        )
    if version < LATEST:
        raise StoreError(
            f"the database schema is at version {version}; run `promissory migrate` to bring "
            f"it to {LATEST}"
        )
    return version


def _as_error_info(
    error: BaseException | ErrorInfo | str | None, default_type: str, default_message: str
) -> ErrorInfo:
    if isinstance(error, ErrorInfo):
        return error
    if isinstance(error, BaseException):
        return error_info(error)
    message = default_message if error is None else str(error)
    return ErrorInfo(type=default_type, message=message, args=[message])


def _as_states(
    state: PromiseState | str | Sequence[PromiseState | str] | None,
) -> list[PromiseState] | None:
    if state is None:
        return None
    items = [state] if isinstance(state, str) else list(state)
    try:
        return [PromiseState(s) for s in items]
    except ValueError:
        known = ", ".join(s.value for s in PromiseState)
        raise InvalidInputError(f"unknown state in {items!r}; states are {known}") from None


def _as_kind(kind: PromiseKind | str | None) -> PromiseKind | None:
    if kind is None:
        return None
    try:
        return PromiseKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in PromiseKind)
        raise InvalidInputError(f"unknown kind {kind!r}; kinds are {known}") from None


def _seconds_until(at: datetime | None) -> float | None:
    if at is None:
        return None
    # Wake at the promise's own timeout to re-read it; the read projects the timeout by the
    # database's clock, so local skew only delays that re-read a little.
    return max(0.01, (at - datetime.now(UTC)).total_seconds() + 0.005)


def _cancel_info(id: str, reason: str | None) -> ErrorInfo:
    """The value of a promise canceled with ``reason``."""
    text = reason or "canceled"
    return ErrorInfo(type="promissory.errors.PromiseCanceledError", message=text, args=[text, id])
