"""libpq's calls that only fill or read its buffers, made without letting go of the GIL.

psycopg's C build lets go of the GIL around most libpq calls, as it should for a call that
may wait on the network. The writer's round trip (``_pipeline``) makes a dozen such calls
that never wait: in pipeline mode on a non-blocking connection, sending a statement only
appends it to libpq's output buffer, and asking whether an answer is complete only parses
what was read. Each release still lets another thread take the GIL, and taking it back waits
for that thread's turn: with a thousand activation threads busy (W5, 8 senders) the writer
spent a third of its round trips so, 0.06–0.15 ms per call against a few microseconds alone
(BENCHMARKS.md, "The message path", eighth pass). The store's listener takes the
notifications libpq has read the same way (``notifies``: psycopg's ``PQnotifies`` lets go of the
GIL once per notification and once more to find there is none left). These calls are made here
through ``ctypes.PyDLL``, which keeps the GIL, on the very libpq psycopg loaded.

Only where that library can be found for sure (Linux, one libpq mapped into the process, of
the version psycopg reports); elsewhere ``load()`` returns ``Calls``, psycopg's own methods,
as before.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Callable, Sequence
from ctypes import POINTER, c_char_p, c_int, c_uint, c_void_p
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["Calls", "Direct", "load"]

log = logging.getLogger("promissory.store")

_PARAMS = POINTER(c_char_p)
_INTS = POINTER(c_int)


class Calls:
    """libpq's calls the writer's round trip makes on a psycopg ``PGconn``, through psycopg's
    own methods (which let go of the GIL around each): what ``load`` falls back to.

    Example:
        >>> calls = load()  # doctest: +SKIP
        >>> calls.send_query_params(conn.pgconn, b"COMMIT", None, None, None)  # doctest: +SKIP

    """

    def send_query_params(
        self,
        pgconn: pq.abc.PGconn,
        query: bytes,
        params: Sequence[Any] | None,
        formats: Sequence[int] | None,
        types: Sequence[int] | None,
    ) -> None:
        """Queue ``query`` with ``params`` (already dumped), as ``PGconn.send_query_params``."""
        pgconn.send_query_params(query, params, param_formats=formats, param_types=types)

    def send_query_prepared(
        self,
        pgconn: pq.abc.PGconn,
        name: bytes,
        params: Sequence[Any] | None,
        formats: Sequence[int] | None,
    ) -> None:
        """Queue prepared statement ``name`` with ``params``, as ``PGconn.send_query_prepared``."""
        pgconn.send_query_prepared(name, params, param_formats=formats)

    def busy(self, pgconn: pq.abc.PGconn) -> Callable[[], int]:
        """``PQisBusy`` of ``pgconn`` (whether an answer is still being read: it parses what is
        buffered), as a call of no argument for a loop over its answers.
        """
        return pgconn.is_busy

    def notifies(self, pgconn: pq.abc.PGconn) -> list[bytes]:
        """The payloads of the notifications libpq has read on ``pgconn`` (``PQnotifies``
        until it has none), in the order they came.
        """
        payloads = []
        while (note := pgconn.notifies()) is not None:
            payloads.append(note.extra)
        return payloads


class Direct(Calls):
    """The same calls, made on libpq with the GIL held (``ctypes.PyDLL``); each raises what
    psycopg's own method would.
    """

    def __init__(self, lib: ctypes.PyDLL) -> None:
        self._params = lib.PQsendQueryParams
        oids = POINTER(c_uint)
        self._params.argtypes = [c_void_p, c_char_p, c_int, oids, _PARAMS, _INTS, _INTS, c_int]
        self._params.restype = c_int
        self._prepared = lib.PQsendQueryPrepared
        self._prepared.argtypes = [c_void_p, c_char_p, c_int, _PARAMS, _INTS, _INTS, c_int]
        self._prepared.restype = c_int
        self._busy = lib.PQisBusy
        self._busy.argtypes = [c_void_p]
        self._busy.restype = c_int
        self._notifies = lib.PQnotifies
        self._notifies.argtypes = [c_void_p]
        self._notifies.restype = POINTER(_Notify)
        self._free = lib.PQfreemem
        self._free.argtypes = [c_void_p]
        self._free.restype = None

    def send_query_params(
        self,
        pgconn: pq.abc.PGconn,
        query: bytes,
        params: Sequence[Any] | None,
        formats: Sequence[int] | None,
        types: Sequence[int] | None,
    ) -> None:
        n, values, lengths, fmts = _arrays(params, formats)
        oids = (c_uint * n)(*types) if n and types else None
        sent = self._params(_ptr(pgconn), query, n, oids, values, lengths, fmts, 0)
        _check(sent, pgconn, "sending query failed")

    def send_query_prepared(
        self,
        pgconn: pq.abc.PGconn,
        name: bytes,
        params: Sequence[Any] | None,
        formats: Sequence[int] | None,
    ) -> None:
        n, values, lengths, fmts = _arrays(params, formats)
        sent = self._prepared(_ptr(pgconn), name, n, values, lengths, fmts, 0)
        _check(sent, pgconn, "sending prepared query failed")

    def busy(self, pgconn: pq.abc.PGconn) -> Callable[[], int]:
        return functools.partial(self._busy, _ptr(pgconn))

    def notifies(self, pgconn: pq.abc.PGconn) -> list[bytes]:
        ptr = _ptr(pgconn)
        payloads = []
        while note := self._notifies(ptr):
            try:
                payloads.append(note.contents.extra or b"")
            finally:
                self._free(note)
        return payloads


class _Notify(ctypes.Structure):
    """libpq's ``PGnotify`` (libpq-fe.h); what follows ``extra`` is libpq's own."""

    _fields_ = [("relname", c_char_p), ("be_pid", c_int), ("extra", c_char_p)]


def _ptr(pgconn: pq.abc.PGconn) -> int:
    ptr: int | None = pgconn.pgconn_ptr  # type: ignore[attr-defined]  # both builds have it
    if ptr is None:
        raise psycopg.OperationalError("the connection is closed")
    return ptr


def _check(sent: int, pgconn: pq.abc.PGconn, what: str) -> None:
    if not sent:
        raise psycopg.OperationalError(f"{what}: {pgconn.get_error_message()}")


def _arrays(
    params: Sequence[Any] | None, formats: Sequence[int] | None
) -> tuple[int, Any, Any, Any]:
    if not params:
        return 0, None, None, None
    n = len(params)
    # ``bytes`` of each: NUL-terminated (a text parameter is read up to its NUL), and kept
    # alive by the array for the call.
    values = (c_char_p * n)(*[None if p is None else bytes(p) for p in params])
    if not formats or not any(formats):
        # All text (the usual case): libpq then needs neither array (it reads each value
        # up to its NUL), and building them was a third of a statement's send.
        return n, values, None, None
    lengths = (c_int * n)(*[0 if p is None else len(p) for p in params])
    return n, values, lengths, (c_int * n)(*formats)


def _mapped_libpq() -> str | None:
    """The path of the one libpq this process has loaded (Linux), or ``None``."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(None, 5) for line in maps if "/libpq" in line]
    except OSError:
        return None
    paths = {f[5].strip() for f in fields if len(f) == 6}
    return paths.pop() if len(paths) == 1 else None


_loaded: list[Calls] = []


def load() -> Calls:
    """The GIL-keeping calls (``Direct``), or psycopg's (``Calls``) where the libpq psycopg
    uses cannot be found for sure. Found once per process.
    """
    if _loaded:
        return _loaded[0]
    calls = Calls()
    path = _mapped_libpq()
    if path is not None:
        try:
            lib = ctypes.PyDLL(path)
            version = lib.PQlibVersion
            version.restype = c_int
            if version() == pq.version():
                calls = Direct(lib)
        except (OSError, AttributeError) as exc:
            log.debug("promissory: libpq's calls go through psycopg (%s)", exc)
    _loaded.append(calls)
    return calls
