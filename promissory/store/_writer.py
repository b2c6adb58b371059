"""Group commit: writes that arrive together from many threads share one transaction.

Callers hand an ``Op`` to ``Writer.run`` (or ``submit`` it and block on its future). When no
batch is being written, the caller's own thread writes its op (leader/follower: an idle
system pays no hand-off between threads); otherwise the op waits in the queue, and the writer
thread takes every op waiting there, runs them in one transaction on the one connection,
commits once, and only then completes each future, so a call that returns has its write on
disk. The next batch's ``BEGIN`` (and its transaction id) travels in the same round trip as
the previous batch's ``COMMIT``; a transaction opened so and left unused for
``SPECULATIVE_IDLE`` seconds is rolled back, so an idle node holds no transaction open. An op
that asks (``Op.answered``) is told its statements' answers before the COMMIT's: the database is
asked to send them first, and the op acts on them while the COMMIT is on its way (a new agent
run asks its model then).

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
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from .._crashpoints import drop_due, dropping
from .._tracing import end_spans
from ..errors import PromissoryError, StoreBusyError, StoreError, StoreUnavailableError
from ._connection import (
    backoff_delay,
    close_quietly,
    connect,
    is_disconnect,
    is_transient,
    is_xid_in_future,
)
from ._handoff import WriteFuture
from ._ops import MAX_BATCH_BYTES, Event, Op, Rows
from ._outage import OutageLog
from ._pipeline import Command, Pipeline, Result, StatementsLost

_IDLE = psycopg.pq.TransactionStatus.IDLE
_IN_TRANSACTION = psycopg.pq.TransactionStatus.INTRANS

log = logging.getLogger("promissory.store")

SPECULATIVE_IDLE = 0.25
"""Seconds the next batch's transaction, opened with the last COMMIT, waits for a write before
it is rolled back (an open transaction id holds back the database's vacuum)."""


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
        settling: Callable[[list[str], bool], None] | None = None,
        max_batch: int = 512,
        name: str = "promissory-writer",
        outage: OutageLog | None = None,
    ) -> None:
        self._dsn = dsn
        self._outage = outage
        self._reconnect_timeout = reconnect_timeout
        self._on_events = on_events
        self._settling = settling
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Op | _Stop] = queue.SimpleQueue()
        self._held: collections.deque[Op] = collections.deque()
        self._conn: psycopg.Connection[Any] | None = None
        self._pipeline: Pipeline | None = None
        """How batches are sent on ``_conn`` (it knows the statements prepared there)."""
        self._mutex = threading.Lock()
        """Held by whichever thread writes a batch on the connection (this one or a caller's)."""
        self._xid: int | None = None
        """The id of the transaction opened with the last COMMIT, not used yet."""
        self._xid_at = 0.0
        self._closed = False
        self.batches = 0
        self.ops = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, op: Op) -> Any:
        """Write ``op`` and return its result once it is committed (or raise its error).

        When no batch is being written and none waits, the write is made in this thread,
        as a batch of one; else it joins the next batch of the writer thread.
        """
        if self._closed:
            raise StoreError("the store is closed")
        if self._queue.empty() and not self._held and self._mutex.acquire(blocking=False):
            try:
                if self._queue.empty() and not self._held and not self._closed:
                    op.future.set_running_or_notify_cancel()
                    self._write([op])
                    return op.future.result()
            finally:
                self._mutex.release()
        return self.submit(op).result()

    def submit(self, op: Op) -> WriteFuture[Any]:
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
            with self._mutex:
                first: Op | None = None
                if self._held:
                    first = self._held.popleft()
                elif stopping:
                    break
            if first is None:
                try:
                    item = self._queue.get(timeout=SPECULATIVE_IDLE)
                except queue.Empty:
                    self._end_speculation()
                    continue
                if isinstance(item, _Stop):
                    break
                first = item
            if not first.future.set_running_or_notify_cancel():
                continue  # withdrawn by its caller, whose wait ran out: never written
            with self._mutex:
                batch, stopping = self._fill(first, stopping)
                self._write(batch)
        with self._mutex:
            if self._conn is not None:
                self._conn.close()

    def _write(self, batch: list[Op]) -> None:
        """Commit ``batch`` and complete its futures, whatever happens (under ``_mutex``)."""
        try:
            self._commit(batch)
        except BaseException as exc:  # never let the writer die with callers waiting
            log.exception("promissory writer failed a batch")
            # Whatever it left open must not be committed by the next batch.
            self._drop_connection()
            if not isinstance(exc, PromissoryError):
                # Callers catch the store's errors, never the driver's (nor a bug's raw).
                wrapped = StoreError(f"the promise store failed a write: {exc!r}")
                wrapped.__cause__ = exc
                exc = wrapped
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(exc)

    def _end_speculation(self) -> None:
        """Roll back the transaction opened with the last COMMIT if no write came to use it."""
        if self._xid is None or time.monotonic() - self._xid_at < SPECULATIVE_IDLE:
            return
        if not self._mutex.acquire(blocking=False):
            return  # a batch is being written: it uses the transaction
        try:
            if self._xid is not None and time.monotonic() - self._xid_at >= SPECULATIVE_IDLE:
                self._xid = None
                self._rollback()
        finally:
            self._mutex.release()

    def _fill(self, first: Op, stopping: bool) -> tuple[list[Op], bool]:
        """The batch that starts with ``first``: held ops, then queued ones, in order.

        An op that writes a row an op of the batch writes already waits for the next batch.
        Returns the batch and whether the stop signal was taken from the queue.
        """
        batch = [first]
        keys = set(first.keys)
        size = first.size
        held: collections.deque[Op] = collections.deque()

        def take(op: Op) -> None:
            nonlocal size
            if size + op.size > MAX_BATCH_BYTES:
                size = MAX_BATCH_BYTES  # full: what follows waits, in order, for the next batch
                held.append(op)
            elif keys.isdisjoint(op.keys):
                if not op.future.set_running_or_notify_cancel():
                    return  # withdrawn by its caller, whose wait ran out: never written
                batch.append(op)
                keys.update(op.keys)
                size += op.size
            else:
                held.append(op)

        def full() -> bool:
            return len(batch) >= self._max_batch or size >= MAX_BATCH_BYTES

        while self._held and not full():
            take(self._held.popleft())
        while not stopping and not full():
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
        settles = [key for op in batch for key in op.settles]
        if not settles or self._settling is None:
            self._commit_batch(batch)
            return
        # Its NOTIFYs may be heard before this thread announces the settles with their
        # records: they wait for it (see ``EventHub.settling``).
        self._settling(settles, True)
        try:
            self._commit_batch(batch)
        finally:
            self._settling(settles, False)

    def _commit_batch(self, batch: list[Op]) -> None:
        deadline = time.monotonic() + self._reconnect_timeout
        attempt = 0
        while True:
            xid: int | None = None
            began = time.monotonic()
            try:
                conn = self._connection(deadline)
                xid, self._xid = self._xid, None
                if xid is None or conn.info.transaction_status != _IN_TRANSACTION:
                    if conn.info.transaction_status != _IDLE:
                        self._rollback()
                        conn = self._connection(deadline)
                    xid = _begin(conn)
                results, self._xid = _run_ops(
                    self._pipelined(conn), batch, None, in_transaction=True
                )
                self._xid_at = time.monotonic()
            except StoreUnavailableError as exc:
                self._fail(batch, exc)
                return
            except Exception as exc:
                if not self._again_after(batch, exc, xid, deadline, attempt):
                    return
                attempt += 1
                continue
            if self._outage is not None:
                self._outage.ok(began)  # a batch committed: the database answers
            self.batches += 1
            self.ops += len(batch)
            self._complete(batch, results)
            return

    def _again_after(
        self, batch: list[Op], exc: Exception, xid: int | None, deadline: float, attempt: int
    ) -> bool:
        """Deal with ``exc``, raised while ``batch`` ran as transaction ``xid``: ``True`` to run
        the batch again (after a pause), ``False`` once every op's caller has its answer.
        """
        if isinstance(exc, psycopg.Error) and is_disconnect(exc, self._conn):
            self._drop_connection()
            if self._outage is not None:
                self._outage.failed(exc, f"retrying for up to {self._reconnect_timeout:g} s")
            if self._outcome_told(batch, xid, deadline, exc):
                return False
            if time.monotonic() >= deadline:
                self._fail(batch, _unavailable(exc))
                return False
            time.sleep(backoff_delay(attempt))
            return True
        if isinstance(exc, psycopg.Error):
            self._rollback()
            # Statements the server lost are prepared again by the pipeline: run it again.
            if not is_transient(exc) and not isinstance(exc, StatementsLost):
                self._isolate(batch, StoreError(f"the database refused a write: {exc}"), exc)
                return False
            if time.monotonic() < deadline:
                time.sleep(backoff_delay(attempt, base=0.005))
                return True
            busy = StoreBusyError(
                f"the database kept stopping a write for {self._reconnect_timeout} s: {exc}"
            )
            self._fail(batch, busy, cause=exc)
            return False
        # Not from the database: a parameter the driver could not send, say. The batch's
        # transaction is still open holding the ops sent so far, and the next batch's COMMIT
        # would commit them although their callers were told they failed; drop the
        # connection, which rolls it back, and find the op at fault.
        self._drop_connection()
        if not self._outcome_told(batch, xid, deadline, exc):
            self._isolate(batch, StoreError(f"the store could not send a write: {exc}"), exc)
        return False

    def _outcome_told(
        self, batch: list[Op], xid: int | None, deadline: float, exc: BaseException
    ) -> bool:
        """The did-it-commit recovery: after the connection of transaction ``xid`` was lost or
        dropped, ask the database whether it committed. If it did, each op is read back and
        its caller told; if that cannot be learned, the callers are told the outcome is
        unknown (``StoreUnavailableError``). Returns whether the callers were told: ``False``
        when nothing was sent, or it did not commit (the batch can simply run again).
        """
        if xid is None:
            return False
        committed = self._committed(xid, deadline)
        if committed is None:
            self._fail(batch, _unavailable(exc))
            return True
        if committed:
            self._read_back(batch, xid, deadline)
            return True
        return False

    def _isolate(self, batch: list[Op], error: StoreError, cause: BaseException) -> None:
        """A statement failed for a reason of its own: each op runs alone, in its own
        transaction, so the one at fault fails only its own caller.
        """
        if len(batch) > 1:
            for op in batch:
                self._commit_batch([op])
            return
        self._fail(batch, error, cause=cause)

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
            try:
                self._conn = connect(self._dsn, deadline=deadline, what="the promise store")
            except StoreUnavailableError as exc:
                if self._outage is not None:
                    self._outage.failed(exc, "its writes failed")
                raise
        return self._conn

    def _pipelined(self, conn: psycopg.Connection[Any]) -> Pipeline:
        if self._pipeline is None or self._pipeline.conn is not conn:
            self._pipeline = Pipeline(conn)  # a new connection has nothing prepared
        return self._pipeline

    def _rollback(self) -> None:
        self._xid = None
        conn = self._conn
        if conn is None or conn.info.transaction_status == _IDLE:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_connection()

    def _drop_connection(self) -> None:
        close_quietly(self._conn, "the promise store's writer")
        self._conn = None
        self._xid = None

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
                if is_xid_in_future(exc):
                    return False  # the server restarted and forgot it: it never committed
                if not is_disconnect(exc, self._conn):
                    log.warning(
                        "promissory writer could not learn whether a batch committed: %s", exc
                    )
                    return None
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
                if conn.info.transaction_status != _IDLE:
                    self._rollback()
                results, _ = _run_ops(self._pipelined(conn), batch, xid)
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


def _begin(conn: psycopg.Connection[Any]) -> int:
    """Open the batch's transaction and return its id, before any write is sent."""
    # One simple-protocol query: no parameters, so no pipeline to set up.
    cur = conn.execute("BEGIN; SELECT txid_current()")
    cur.nextset()
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


_COMMIT: Command = ("COMMIT", None)
_BEGIN: Command = ("BEGIN", None)
_TXID: Command = ("SELECT txid_current()", None)


def _run_ops(
    pipeline: Pipeline,
    batch: list[Op],
    xid: int | None,
    *,
    in_transaction: bool = False,
) -> tuple[list[Any], int | None]:
    """Run ``batch`` in one transaction (opened already with ``in_transaction``), commit, and
    return each op's result or the exception that is its own, with the id of the transaction
    opened for the next batch; raises what fails them all.

    With ``xid`` (reading back after an unknown outcome) each op runs alone, as it was
    written, and its ``finish`` is told the transaction to look for; no next one is opened.
    """
    # Ops of one kind share a multi-row statement (not when reading back).
    groups: dict[str | bytes, list[Op]] = {}
    if xid is None:
        for op in batch:
            if op.group is not None and op.answered is None:
                groups.setdefault(op.group.sql, []).append(op)
    shared = [ops for ops in groups.values() if len(ops) > 1]
    own, group_results, next_xid = _send(pipeline, batch, shared, in_transaction, xid is None)
    # The batch is committed. What can still fail is turning an op's rows into Python (a
    # value the driver cannot load, say); that failure is the op's own, and the others' writes
    # stand: re-running the batch would misreport them as not applied.
    grouped = _grouped_rows(group_results)
    results: list[Any] = []
    for op in batch:
        try:
            got = grouped[id(op)] if id(op) in grouped else [r.rows() for r in own[id(op)]]
            if isinstance(got, BaseException):
                raise got
        except psycopg.Error as exc:
            err = StoreError(f"the write was committed but its result could not be read: {exc}")
            err.__cause__ = exc
            results.append(err)
            continue
        results.append(_finish(pipeline.conn, op, got, xid))
    return results, next_xid


def _send(
    pipeline: Pipeline,
    batch: list[Op],
    shared: list[list[Op]],
    in_transaction: bool,
    speculate: bool,
) -> tuple[dict[int, list[Result]], list[tuple[list[Op], Result]], int | None]:
    """Send every statement of ``batch`` and the COMMIT in one round trip, and wait for the
    answers: each op's own statements', and each statement ``shared`` ops of a kind made.
    With ``speculate``, the next batch's transaction is opened in the same round trip, and
    its id returned.
    """
    in_group = {id(op) for ops in shared for op in ops}
    commands: list[Command] = []
    if not in_transaction:
        commands.append(_BEGIN)
    for ops in shared:
        sql = ops[0].group.sql  # type: ignore[union-attr]
        columns = [list(c) for c in zip(*(op.group.values for op in ops), strict=True)]  # type: ignore[union-attr]
        commands.append((sql, columns))
    for op in batch:
        if id(op) not in in_group:
            commands.extend(op.statements)
    # Ops that are told of their answers before the COMMIT's have them flushed first (not
    # when reading back after an unknown outcome: a row found then may be another's).
    answered = [op for op in batch if op.answered is not None] if speculate else []
    flush_after = len(commands) - 1 if answered else None
    commands.append(_COMMIT)
    if speculate:
        # Answered in the same round trip; a lost connection is the COMMIT's unknown
        # outcome, which the caller resolves by the batch's own id.
        commands.append(_BEGIN)
        commands.append(_TXID)
    # While the database works on the batch: what its ops do meanwhile (an activation's
    # thread started), and the spans of steps done are ended (tracing's cost off the steps'
    # path; nothing without tracing).
    sever = pipeline.conn if dropping() and drop_due(op.label for op in batch) else None
    hooks = any(op.meanwhile is not None for op in batch)

    def sent() -> None:
        if sever is not None:
            _sever(sever)  # a crash test's fault: the COMMIT went out, its answer never comes
        if hooks:
            _meanwhile(batch)
        end_spans()

    def flushed(answers: list[Result]) -> None:
        own = _split(answers, batch, shared, in_group, in_transaction)[0]
        for op in answered:
            then, op.answered = op.answered, None
            if then is not None:
                then([r.count for r in own[id(op)]])

    # A statement the database refuses raises here, before anything is committed.
    answers = pipeline.run(
        commands,
        sent=sent,
        flush_after=flush_after,
        flushed=flushed if answered else None,
    )
    own, group_results = _split(answers, batch, shared, in_group, in_transaction)
    next_xid = None
    if speculate:
        row = answers[-1].rows()
        next_xid = int(row[0][0]) if row else None
    return own, group_results, next_xid


def _split(
    answers: list[Result],
    batch: list[Op],
    shared: list[list[Op]],
    in_group: set[int],
    in_transaction: bool,
) -> tuple[dict[int, list[Result]], list[tuple[list[Op], Result]]]:
    """The answers to ``_send``'s commands (or the first ones), by op: each op's own
    statements', and each shared statement's with its ops.
    """
    at = 0 if in_transaction else 1
    group_results = []
    for ops in shared:
        group_results.append((ops, answers[at]))
        at += 1
    own: dict[int, list[Result]] = {}
    for op in batch:
        if id(op) not in in_group:
            n = len(op.statements)
            own[id(op)] = answers[at : at + n]
            at += n
    return own, group_results


def _meanwhile(batch: list[Op]) -> None:
    """Run each op's ``meanwhile`` once (a batch written again after a lost answer does not)."""
    for op in batch:
        then, op.meanwhile = op.meanwhile, None
        if then is not None:
            then()


def _grouped_rows(
    group_results: list[tuple[list[Op], Result]],
) -> dict[int, list[Rows] | BaseException]:
    """Each grouped op's rows (its row of the shared statement, by its id), or the error."""
    grouped: dict[int, list[Rows] | BaseException] = {}
    for ops, result in group_results:
        try:
            by_id = {row[0]: row for row in result.rows()}
        except psycopg.Error as exc:
            for op in ops:
                grouped[id(op)] = exc
            continue
        for op in ops:
            row = by_id.get(op.group.id)  # type: ignore[union-attr]
            grouped[id(op)] = [[row] if row is not None else []]
    return grouped


def _finish(conn: psycopg.Connection[Any], op: Op, rows: list[Rows], xid: int | None) -> Any:
    """The op's result from its rows (and its re-read, when it needs one), or its error; a
    bundle's, the list of its parts' results.
    """
    if op.parts:
        results, at = [], 0
        for part in op.parts:
            n = len(part.statements)
            results.append(_finish(conn, part, rows[at : at + n], xid))
            at += n
        return results
    if op.reread is not None:
        if xid is None and rows[0]:
            rows.append([])
        else:
            # idempotent replay, not found, or reading back after an unknown outcome
            rows.append(conn.execute(*op.reread).fetchall())
    try:
        return op.finish(rows, xid)
    except BaseException as exc:
        return exc


def _sever(conn: psycopg.Connection[Any]) -> None:
    """Cut ``conn``'s socket both ways (what a dropped network does), leaving libpq to find
    out at its next read.
    """
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def _unavailable(exc: BaseException) -> StoreUnavailableError:
    err = StoreUnavailableError(f"the promise store lost its database connection: {exc}")
    err.__cause__ = exc
    return err
