"""``Store``: durable promises in Postgres, with the semantics of the durable-promise protocol.

The id is the idempotency key: creating an existing id returns the existing promise unchanged,
and settling a settled promise returns it as it is, saying it did nothing. Once a promise's
timeout has passed it reads and settles as timed out. Writes from many threads are committed
together (group commit) and a call returns only once its write is durable. Lost connections
are re-made with backoff; a caller sees ``StoreUnavailableError`` only after
``reconnect_timeout`` seconds without the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from ..errors import (
    ActorNotFoundError,
    InvalidInputError,
    PromiseNotFoundError,
    SchemaTooNewError,
    StoreError,
    StoreUnavailableError,
)
from . import _promises as q
from ._actors import mark_ending_op
from ._codec import encode, error_info
from ._connection import backoff_delay, configure, connect, is_disconnect, redact
from ._events import Callback, EventHub, Subscription
from ._listener import Listener
from ._records import ActorCancel, ErrorInfo, Outcome, Page, Promise, PromiseKind, PromiseState
from ._schema import LATEST, channel_for, current_schema, migrate
from ._validate import MAX_READ_ID_LENGTH, Timeout, check_id, check_tags, timeout_parts
from ._writer import Event, Op, Writer

T = TypeVar("T")

__all__ = ["Store"]


class Store:
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
            dsn, reconnect_timeout=reconnect_timeout, on_events=self.events.publish
        )
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._closed = False

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
    ) -> Outcome:
        """Create a pending promise, or return the one that has this id already, unchanged.

        Args:
            id: the promise id and idempotency key.
            param: any msgspec-encodable value, stored as JSON.
            timeout: seconds or a ``timedelta`` from the database's now, or an aware
                ``datetime``; a time already past creates the promise timed out.
            tags: a mapping of strings to strings.
            timer: a timer resolves (rather than times out) when its timeout passes.

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
        op = q.create_op(id, param=param_json, tags=tags_json, secs=secs, at=at, kind=kind)
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

    def find(self, id: str) -> Promise | None:
        """The promise with this id, or ``None``."""
        check_id(id, limit=MAX_READ_ID_LENGTH)

        def read(conn: psycopg.Connection[Any]) -> Promise | None:
            row = conn.execute(q._GET, (id,)).fetchone()
            return q.promise_from_row(row) if row else None

        return self.read(read)

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
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
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

    def wait(self, id: str, timeout: float | None = None) -> Promise:
        """Block until the promise is settled (or times out) and return it.

        Wakes on the settle itself, in this process or another (LISTEN/NOTIFY), and at the
        promise's own timeout; never polls in a loop.

        Raises:
            PromiseNotFoundError: no promise has this id.
            TimeoutError: ``timeout`` seconds passed first.

        """
        woken = threading.Event()
        sub = self.subscribe("settled", [id], lambda kind, key, resync: woken.set())
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                promise = self.get(id)
                if promise.state.settled:
                    return promise
                pause = _seconds_until(promise.timeout_at)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"promise {id!r} still pending after {timeout} s")
                    pause = left if pause is None else min(pause, left)
                woken.wait(pause)
                woken.clear()
        finally:
            sub.cancel()

    # -- timeouts ----------------------------------------------------------------------------

    def sweep_timeouts(self, limit: int = 1000) -> list[Promise]:
        """Settle up to ``limit`` overdue pending promises, oldest first; return them."""
        return self.execute(q.sweep_op(limit))  # type: ignore[no-any-return]

    def seconds_to_next_timeout(self) -> float | None:
        """Seconds until the earliest pending timeout (negative if overdue), ``None`` if none."""
        row = self.read(lambda conn: conn.execute(q.NEXT_TIMEOUT).fetchone())
        return float(row[0]) if row and row[0] is not None else None

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, kind: str, keys: Iterable[str], callback: Callback) -> Subscription:
        """Call ``callback(kind, key, resync)`` on events of ``kind`` for ``keys``.

        Kinds: ``"settled"`` (key: promise id), ``"message"`` (key: recipient actor id, a tab,
        and the message's seq), ``"timer"`` (key: ``""``), ``"ending"`` (key: the id of an
        actor marked to end, see ``cancel_actor``). ``keys=[""]`` subscribes to every
        key of the kind.
        Callbacks run on the store's threads and must not block.
        """
        if self._closed:
            raise StoreError("the store is closed")  # and must not start a listener again
        self._ensure_listener()
        return self.events.subscribe(kind, keys, callback)

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

    def _ensure_listener(self) -> None:
        listener = self._listener or self._start_listener()
        listener.wait_ready(self.reconnect_timeout)

    # -- plumbing for the layers above -------------------------------------------------------

    def submit(self, op: Op) -> Future[Any]:
        """Queue a write for the next group commit; the future completes once it is durable."""
        if self._read_only is not None:
            raise SchemaTooNewError(self._read_only)
        return self._writer.submit(op)

    def execute(self, op: Op) -> Any:
        """Run a write through group commit and return its result once it is durable."""
        return self.submit(op).result()

    def read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn`` on a pooled autocommit connection, retrying it if the connection is lost."""
        if self._closed:
            # Else the closed pool reads as a lost connection, retried until the deadline.
            raise StoreError("the store is closed")
        deadline = time.monotonic() + self.reconnect_timeout
        attempt = 0
        while True:
            conn = None
            try:
                with self._pool.connection(timeout=max(0.1, deadline - time.monotonic())) as conn:
                    return fn(conn)
            except psycopg_pool.PoolTimeout as exc:
                if time.monotonic() >= deadline:
                    raise StoreUnavailableError(
                        f"the promise store could not reach {redact(self.dsn)} "
                        f"for {self.reconnect_timeout} s"
                    ) from exc
            except psycopg.Error as exc:
                if not is_disconnect(exc, conn):
                    raise StoreError(f"the database refused a read: {exc}") from exc
                if time.monotonic() >= deadline:
                    raise StoreUnavailableError(
                        f"the promise store lost its connection to {redact(self.dsn)}: {exc}"
                    ) from exc
            time.sleep(backoff_delay(attempt))
            attempt += 1

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
