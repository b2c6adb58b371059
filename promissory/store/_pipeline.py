"""One round trip for a batch: its statements, its COMMIT and the next BEGIN, on libpq directly.

The group-commit writer (``_writer``) sends every statement of a batch in libpq's pipeline
mode and reads the answers once. psycopg's own ``Connection.pipeline()`` does the same with a
cursor, a queue entry and a result hand-off per statement; on a step's single write that
Python is about a third of the commit's time (0.52–0.54 ms against 0.36–0.39 ms for the
same statements sent here: BENCHMARKS.md, "The message path"), so the writer drives the
connection's ``pgconn`` itself and keeps psycopg for what it does well: turning parameters
into the wire format and rows back into Python (``Transformer``), errors into its exception
classes, and waiting on the socket. The calls that only fill libpq's buffers or read what it
has buffered are made with the GIL held where that can be done safely (``_libpq``): letting
it go a dozen times per round trip made the writer wait for other threads' turns.

Statements the writer runs again and again are prepared once per connection (the second
time one is seen, as psycopg does from its fifth), by name, ``promissory_N``: the server then
skips parsing and planning them. The pipeline owns the connection's prepared statements:
psycopg's own cache is switched off there, since it sends ``DEALLOCATE ALL`` (ours too) at
the first ``ROLLBACK`` after it has prepared a statement of its own. Should the server lose
them anyway (a ``DISCARD ALL`` from a pooler, say), the round trip that finds one missing
raises ``StatementsLost`` and the pipeline prepares them again: running it again succeeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import abc, errors, generators, pq
from psycopg._queries import PostgresQuery
from psycopg.adapt import Transformer
from psycopg.waiting import Wait

from ._libpq import Calls, load

__all__ = ["Pipeline", "Result", "StatementsLost"]

_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FATAL = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_WAIT_R = Wait.R

Command = tuple[str | bytes, Sequence[Any] | Mapping[str, Any] | None]
"""A statement and its parameters (``None``: a statement without any)."""

PREPARE_AFTER = 2
"""A statement is prepared the second time this connection runs it."""
PREPARED_MAX = 200
"""At most this many statements are prepared per connection (then the others are not)."""


class StatementsLost(psycopg.errors.InvalidSqlStatementName):
    """The server has lost a statement this pipeline prepared (someone ran ``DEALLOCATE ALL``
    or ``DISCARD ALL`` on the connection): nothing of the round trip is kept (its transaction
    is aborted), and the pipeline has forgotten every name, so the same statements run again
    are prepared again.
    """


class Result:
    """One statement's answer: its rows (loaded on demand), or the error it failed with."""

    __slots__ = ("_pg", "_tx")

    def __init__(self, pg: pq.abc.PGresult, tx: abc.Transformer) -> None:
        self._pg = pg
        self._tx = tx

    @property
    def count(self) -> int:
        """How many rows the statement returned (0 for one that returns none)."""
        return self._pg.ntuples if self._pg.status == _TUPLES_OK else 0

    def rows(self) -> list[tuple[Any, ...]]:
        """The statement's rows as tuples (``[]`` for a statement that returns none)."""
        pg = self._pg
        if pg.status != _TUPLES_OK:
            return []
        tx = self._tx
        tx.set_pgresult(pg)
        rows: list[tuple[Any, ...]] = tx.load_rows(0, pg.ntuples, tuple)
        return rows


class Pipeline:
    """Runs lists of statements in one round trip on one connection (a writer's).

    Example:
        >>> results = Pipeline(conn).run([("SELECT %s", (1,))])  # doctest: +SKIP
        >>> results[0].rows()  # doctest: +SKIP
        [(1,)]

    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        # libpq's buffer-only calls, made with the GIL held where that can be (``_libpq``).
        self._calls: Calls = load()
        # Ours alone: psycopg's cache would DEALLOCATE ALL at the first ROLLBACK after it
        # prepared one of its own (the writer's re-reads), and every write would fail after.
        conn.prepare_threshold = None
        self._seen: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self._names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self._made = 0
        # One of each for the connection's life: the transformer keeps the dumpers and loaders
        # it found (a new one per round trip would look each up again for every column).
        self._tx = Transformer(conn)
        self._query = PostgresQuery(self._tx)

    def run(
        self,
        commands: Sequence[Command],
        *,
        sent: Callable[[], None] | None = None,
        flush_after: int | None = None,
        flushed: Callable[[list[Result]], None] | None = None,
    ) -> list[Result]:
        """Send ``commands`` in one pipeline and one sync, and wait for every answer.

        ``sent`` is called once everything is written to the socket, before any answer is
        read (a crash test cuts the connection there). With ``flush_after`` (an index into
        ``commands``), the server is asked to send the answers up to that command at once,
        not with the rest, and ``flushed`` is given them (when none failed) while the rest
        is worked on. Raises the first statement's error, as psycopg would, once every
        answer is in (the transaction is then aborted, and the connection ready for a
        ``ROLLBACK``); a lost connection raises what libpq says.
        """
        conn = self.conn
        pgconn = conn.pgconn
        tx, query, calls = self._tx, self._query, self._calls
        # Where each prepare's answer comes among the answers, and what it prepares.
        preparing: list[tuple[int, tuple[bytes, tuple[int, ...]]]] = []
        asked = 0
        # How many answers come up to ``flush_after``'s (prepares' included), once known.
        flushing: int | None = None
        pgconn.enter_pipeline_mode()
        try:
            for at, (sql, params) in enumerate(commands):
                if at == flush_after:
                    flushing = -1  # this command's answer is the last one flushed
                query.convert(sql, params)
                asked += 1
                # Those without parameters too: unnamed, every batch's BEGIN, COMMIT and
                # txid_current() cost the server 36.5 µs against 14.7 prepared (parsed and
                # planned each time; BENCHMARKS.md, "The message path", thirteenth pass).
                key = (query.query, query.types)
                name = self._names.get(key)
                if name is None and self._prepare(key):
                    name = b"promissory_%d" % self._made
                    self._made += 1
                    pgconn.send_prepare(name, query.query, param_types=query.types)
                    preparing.append((asked - 1, key))
                    asked += 1
                    self._names[key] = name  # taken back below if the server did not make it
                if name is None:
                    calls.send_query_params(
                        pgconn, query.query, query.params, query.formats, query.types
                    )
                else:
                    calls.send_query_prepared(pgconn, name, query.params, query.formats)
                if flushing == -1:
                    pgconn.send_flush_request()
                    flushing = asked
            pgconn.pipeline_sync()
            first = None
            if flushing is not None and flushed is not None:
                first = functools.partial(self._flushed, preparing, flushed)
            answers = conn.wait(_communicate(pgconn, calls, sent, flushing, first))
        finally:
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                try:
                    pgconn.exit_pipeline_mode()
                except psycopg.Error:
                    pass  # answers still pending: the writer drops the connection
        return self._answers(answers, preparing, tx)

    def _flushed(
        self,
        preparing: list[tuple[int, tuple[bytes, tuple[int, ...]]]],
        flushed: Callable[[list[Result]], None],
        answers: list[pq.abc.PGresult],
    ) -> None:
        if any(a.status not in _OK for a in answers):
            return  # the round trip fails: its caller is told so at its end
        prepares = {at for at, _ in preparing}
        flushed([Result(a, self._tx) for i, a in enumerate(answers) if i not in prepares])

    def _prepare(self, key: tuple[bytes, tuple[int, ...]]) -> bool:
        seen = self._seen.get(key, 0) + 1
        if len(self._seen) < PREPARED_MAX * 4:
            self._seen[key] = seen
        return seen >= PREPARE_AFTER and len(self._names) < PREPARED_MAX

    def _answers(
        self,
        answers: list[pq.abc.PGresult],
        preparing: list[tuple[int, tuple[bytes, tuple[int, ...]]]],
        tx: abc.Transformer,
    ) -> list[Result]:
        # A prepare's own answer comes just before its statement's: set it aside, and forget
        # a prepare the server did not make (something before it failed: it was skipped).
        prepares = set()
        for at, key in preparing:
            prepares.add(at)
            if answers[at].status not in _OK:
                self._names.pop(key, None)
        for a in answers:
            if a.status == _FATAL:
                error = errors.error_from_result(a, encoding=self.conn.info.encoding)
                if isinstance(error, errors.InvalidSqlStatementName) and self._names:
                    self._names.clear()  # the server has lost them: prepared again from now
                    lost = StatementsLost(str(error))
                    raise lost from error
                raise error
        if any(a.status == _ABORTED for a in answers):
            raise errors.OperationalError("the pipeline was aborted, and no statement said why")
        return [Result(a, tx) for i, a in enumerate(answers) if i not in prepares]


def _communicate(
    pgconn: pq.abc.PGconn,
    calls: Calls,
    sent: Callable[[], None] | None,
    flushing: int | None = None,
    flushed: Callable[[list[pq.abc.PGresult]], None] | None = None,
) -> Generator[Any, Any, list[pq.abc.PGresult]]:
    """Send what is queued, then read every answer up to the sync: one wait on the socket for
    the whole round trip; what is read is taken from libpq's buffer (with the GIL held, with
    ``Direct`` calls). ``flushed`` is given the first ``flushing`` answers as soon as they are
    in.
    """
    yield from generators.send(pgconn)
    if sent is not None:
        sent()
    answers: list[pq.abc.PGresult] = []
    # A command's answer is its results (one, in pipeline mode) then a null; the sync's, a
    # PIPELINE_SYNC result alone.
    last: pq.abc.PGresult | None = None
    busy = calls.busy(pgconn)
    while True:
        while busy():
            while not (yield _WAIT_R):
                pass
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            if last is None:
                raise psycopg.OperationalError("the server ended a command with no answer")
            answers.append(last)
            last = None
            if flushed is not None and len(answers) == flushing:
                flushed(answers)
        elif result.status == _SYNC:
            return answers
        else:
            last = result
