"""Group commit: writes that arrive together from many threads share one transaction.

Callers hand an ``Op`` to ``Writer.submit`` and block on its future; the writer thread takes
every op waiting in its queue, runs them in one transaction on its own connection, commits
once, and only then completes each future, so a call that returns has its write on disk.

When the connection is lost mid-batch the outcome may be unknown (the COMMIT went out, no
answer came back). The writer learns the transaction id before sending any write, and on a
lost connection asks the database with ``txid_status`` whether it committed: if it did, each op
is read back (ops are written to be safe to run again: re-running a committed op changes
nothing, and its result says who applied it by comparing the row's ``xmin`` with the batch's
transaction id); if it did not, the batch is simply run again. A statement that fails for a
reason other than the connection reruns each op of the batch alone, so one bad op fails only
its own caller.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import psycopg
from psycopg.pq import ExecStatus

from ..errors import StoreError, StoreUnavailableError
from ._connection import backoff_delay, connect, is_disconnect, is_transient

_TUPLES_OK = ExecStatus.TUPLES_OK

log = logging.getLogger("promissory.store")

Rows = list[tuple[Any, ...]]
Statement = tuple[str | bytes, Sequence[Any] | Mapping[str, Any]]
Event = tuple[str, str]
"""A change other parties may wait on: ``("settled", promise_id)`` or ``("message", actor_id)``."""


class Op:
    """One write: statements run in order in a batch's transaction, and how to read the result.

    Every op must be safe to run again after it has committed (the batch may be re-run or read
    back when the connection is lost at COMMIT); ``finish`` turns each statement's rows into the
    result and is told the batch's transaction id only when re-reading after an unknown
    outcome, so it can tell by ``xmin`` whether this op was the one that applied the write.

    ``keys`` name the rows the op writes (promise ids, say). Ops that share a key never share a
    batch: then a row whose ``xmin`` is the batch's transaction was written by the one op of the
    batch that names it, and a re-read says ``applied`` for that op alone.

    ``reread`` is a query run after the commit, only when the op's first statement returned no
    row (its write did nothing: the row existed, or a fence held) or when reading back after an
    unknown outcome; its rows are passed to ``finish`` after the statements' own. Most writes
    return their row, so most ops cost one statement.

    ``group`` lets ops of one kind share a statement: ops of a batch with the same
    ``Group.sql`` run as one multi-row statement (its parameters are the ops' ``values``
    column by column, as arrays), whose rows go back to each op by the id in their first
    column. An op with a group must have one statement, whose rows it receives either way.
    """

    __slots__ = ("statements", "finish", "events", "keys", "future", "reread", "group")

    def __init__(
        self,
        statements: Sequence[Statement],
        finish: Callable[[list[Rows], int | None], Any],
        events: Callable[[Any], Sequence[Event]] | None = None,
        *,
        keys: Sequence[str] = (),
        reread: Statement | None = None,
        group: Group | None = None,
    ) -> None:
        self.statements = statements
        self.finish = finish
        self.events = events
        self.keys = tuple(keys)
        self.future: Future[Any] = Future()
        self.reread = reread
        self.group = group


class Group:
    """How an op joins others of its kind in one multi-row statement (see ``Op``)."""

    __slots__ = ("sql", "id", "values")

    def __init__(self, sql: str, id: str, values: Sequence[Any]) -> None:
        self.sql = sql
        self.id = id
        self.values = values


class _Stop:
    pass


_STOP = _Stop()


class Writer:
    """The group-commit writer: one thread, one connection, one transaction per batch."""

    def __init__(
        self,
        dsn: str,
        *,
        reconnect_timeout: float,
        on_events: Callable[[list[Event]], None],
        max_batch: int = 512,
        name: str = "promissory-writer",
    ) -> None:
        self._dsn = dsn
        self._reconnect_timeout = reconnect_timeout
        self._on_events = on_events
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Op | _Stop] = queue.SimpleQueue()
        self._held: collections.deque[Op] = collections.deque()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self.batches = 0
        self.ops = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> Future[Any]:
        """Queue ``op`` for the next batch; its future completes after the batch commits."""
        if self._closed:
            raise StoreError("the store is closed")
        self._queue.put(op)
        return op.future

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while True:
            if self._held:
                first = self._held.popleft()
            elif stopping:
                break
            else:
                item = self._queue.get()
                if isinstance(item, _Stop):
                    break
                first = item
            batch, stopping = self._fill(first, stopping)
            try:
                self._commit(batch)
            except BaseException as exc:  # never let the writer thread die with callers waiting
                log.exception("promissory writer failed a batch")
                # Whatever it left open must not be committed by the next batch.
                self._drop_connection()
                for op in batch:
                    if not op.future.done():
                        op.future.set_exception(exc)
        if self._conn is not None:
            self._conn.close()

    def _fill(self, first: Op, stopping: bool) -> tuple[list[Op], bool]:
        """The batch that starts with ``first``: held ops, then queued ones, in order.

        An op that writes a row an op of the batch writes already waits for the next batch.
        Returns the batch and whether the stop signal was taken from the queue.
        """
        batch = [first]
        keys = set(first.keys)
        held: collections.deque[Op] = collections.deque()

        def take(op: Op) -> None:
            if keys.isdisjoint(op.keys):
                batch.append(op)
                keys.update(op.keys)
            else:
                held.append(op)

        while self._held and len(batch) < self._max_batch:
            take(self._held.popleft())
        while not stopping and len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Stop):
                stopping = True
                break
            take(item)
        held.extend(self._held)
        self._held = held
        return batch, stopping

    def _commit(self, batch: list[Op]) -> None:
        deadline = time.monotonic() + self._reconnect_timeout
        attempt = 0
        while True:
            xid: int | None = None
            try:
                conn = self._connection(deadline)
                xid = _begin(conn)
                results = _run_ops(conn, batch, None, in_transaction=True)
            except StoreUnavailableError as exc:
                self._fail(batch, exc)
                return
            except psycopg.Error as exc:
                if is_disconnect(exc, self._conn):
                    self._drop_connection()
                    if xid is not None:
                        committed = self._committed(xid, deadline)
                        if committed is None:
                            self._fail(batch, _unavailable(exc))
                            return
                        if committed:
                            self._read_back(batch, xid, deadline)
                            return
                    if time.monotonic() >= deadline:
                        self._fail(batch, _unavailable(exc))
                        return
                    time.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                self._rollback()
                if is_transient(exc) and time.monotonic() < deadline:
                    time.sleep(backoff_delay(attempt, base=0.005))
                    attempt += 1
                    continue
                if len(batch) > 1:
                    # Find the op that failed: each op alone, in its own transaction.
                    for op in batch:
                        self._commit([op])
                    return
                self._fail(batch, StoreError(f"the database refused a write: {exc}"), cause=exc)
                return
            except Exception as exc:
                # Not from the database: a parameter the driver could not send, say. The batch's
                # transaction is still open holding the ops sent so far, and the next batch's
                # COMMIT would commit them although their callers were told they failed; drop the
                # connection, which rolls it back, and find the op at fault.
                self._drop_connection()
                if xid is not None:
                    committed = self._committed(xid, deadline)
                    if committed is None:
                        self._fail(batch, _unavailable(exc))
                        return
                    if committed:
                        self._read_back(batch, xid, deadline)
                        return
                if len(batch) > 1:
                    for op in batch:
                        self._commit([op])
                    return
                self._fail(batch, StoreError(f"the store could not send a write: {exc}"), exc)
                return
            self.batches += 1
            self.ops += len(batch)
            self._complete(batch, results)
            return

    def _complete(self, batch: list[Op], results: list[Any]) -> None:
        events: list[Event] = []
        for op, result in zip(batch, results, strict=True):
            if op.events is not None and not isinstance(result, BaseException):
                events.extend(op.events(result))
        if events:
            # Wake in-process waiters before the callers return, so a caller that settles a
            # promise and then looks at a waiter sees it woken.
            try:
                self._on_events(events)
            except Exception:
                log.exception("promissory event callback failed")
        for op, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
                op.future.set_result(result)

    def _fail(
        self, batch: list[Op], exc: BaseException, cause: BaseException | None = None
    ) -> None:
        if cause is not None:
            exc.__cause__ = cause
        for op in batch:
            if not op.future.done():
                op.future.set_exception(exc)

    def _connection(self, deadline: float) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self._dsn, deadline=deadline, what="the promise store")
        return self._conn

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def _committed(self, xid: int, deadline: float) -> bool | None:
        """Ask the database whether transaction ``xid`` committed; ``None`` if it cannot say."""
        attempt = 0
        while True:
            try:
                conn = self._connection(deadline)
                row = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
            except StoreUnavailableError:
                return None
            except psycopg.Error as exc:
                if not is_disconnect(exc, self._conn):
                    raise
                self._drop_connection()
                if time.monotonic() >= deadline:
                    return None
                time.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            status = row[0] if row else None
            if status == "committed":
                return True
            if status == "aborted" or status is None:
                # None: so old it was truncated from the commit log, which cannot be the case
                # for a transaction we just ran; treat as not committed and run it again.
                return False
            # "in progress": the old backend has not finished dying yet. It will, once it sees
            # its client gone; but a backend that lingers must not hold the writer past its
            # deadline (the batch then fails as unavailable, its outcome unknown).
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def _read_back(self, batch: list[Op], xid: int, deadline: float) -> None:
        attempt = 0
        while True:
            try:
                conn = self._connection(deadline)
                results = _run_ops(conn, batch, xid)
            except psycopg.Error as exc:
                if is_disconnect(exc, self._conn) and time.monotonic() < deadline:
                    self._drop_connection()
                    time.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                self._fail(batch, _unavailable(exc))
                return
            except StoreUnavailableError as exc:
                self._fail(batch, exc)
                return
            self._complete(batch, results)
            return


def _rows(cur: psycopg.Cursor[Any]) -> Rows:
    # Cheaper than cur.description, which builds column objects on each call.
    result = cur.pgresult
    return cur.fetchall() if result is not None and result.status == _TUPLES_OK else []


def _begin(conn: psycopg.Connection[Any]) -> int:
    """Open the batch's transaction and return its id, before any write is sent."""
    # One simple-protocol query: no parameters, so no pipeline to set up.
    cur = conn.execute("BEGIN; SELECT txid_current()")
    cur.nextset()
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def _run_ops(
    conn: psycopg.Connection[Any],
    batch: list[Op],
    xid: int | None,
    *,
    in_transaction: bool = False,
) -> list[Any]:
    # Ops of one kind share a multi-row statement (not when reading back: then each op runs
    # alone, as it was written).
    groups: dict[str, list[Op]] = {}
    if xid is None:
        for op in batch:
            if op.group is not None:
                groups.setdefault(op.group.sql, []).append(op)
    shared = {id(op) for ops in groups.values() if len(ops) > 1 for op in ops}
    cursors: dict[int, list[psycopg.Cursor[Any]]] = {}
    group_cursors: list[tuple[list[Op], psycopg.Cursor[Any]]] = []
    with conn.pipeline() as pipeline:
        if not in_transaction:
            conn.execute("BEGIN")
        for sql, ops in groups.items():
            if len(ops) > 1:
                columns = [list(c) for c in zip(*(op.group.values for op in ops), strict=True)]  # type: ignore[union-attr]
                group_cursors.append((ops, conn.cursor().execute(sql, columns)))
        for op in batch:
            if id(op) not in shared:
                cursors[id(op)] = [
                    conn.cursor().execute(sql, params) for sql, params in op.statements
                ]
        conn.execute("COMMIT")
        # A statement the database refuses raises here, before anything is committed.
        pipeline.sync()
    # The batch is committed. What can still fail is turning an op's rows into Python (a
    # value the driver cannot load, say); that failure is the op's own, and the others' writes
    # stand: re-running the batch would misreport them as not applied.
    grouped: dict[int, list[Rows] | BaseException] = {}
    for ops, cur in group_cursors:
        try:
            by_id = {row[0]: row for row in _rows(cur)}
        except psycopg.Error as exc:
            for op in ops:
                grouped[id(op)] = exc
            continue
        for op in ops:
            row = by_id.get(op.group.id)  # type: ignore[union-attr]
            grouped[id(op)] = [[row] if row is not None else []]
    results: list[Any] = []
    for op in batch:
        try:
            if id(op) in grouped:
                got = grouped[id(op)]
                if isinstance(got, BaseException):
                    raise got
                op_rows = got
            else:
                op_rows = [_rows(cur) for cur in cursors[id(op)]]
        except psycopg.Error as exc:
            err = StoreError(f"the write was committed but its result could not be read: {exc}")
            err.__cause__ = exc
            results.append(err)
            continue
        if op.reread is not None:
            if xid is None and op_rows[0]:
                op_rows.append([])
            else:
                # idempotent replay, not found, or reading back after an unknown outcome
                op_rows.append(conn.execute(*op.reread).fetchall())
        try:
            results.append(op.finish(op_rows, xid))
        except BaseException as exc:
            results.append(exc)
    return results


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    err = StoreUnavailableError(f"the promise store lost its database connection: {exc}")
    err.__cause__ = exc
    return err
