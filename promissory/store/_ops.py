"""A write and its result: ``Op``, the events it announces, and how ops of a kind share a
statement (``Group``).

An op is SQL plus a pure ``finish`` that turns the rows into its result; the writer
(``_writer``) runs many in one transaction. Every op must be safe to run again after it has
committed: the writer may re-run or read back a batch whose COMMIT got no answer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._handoff import WriteFuture

__all__ = ["MAX_BATCH_BYTES", "Event", "EventKind", "Group", "Op", "Rows", "Statement", "bundle"]

Rows = list[tuple[Any, ...]]
Statement = tuple[str | bytes, Sequence[Any] | Mapping[str, Any]]


class EventKind(enum.StrEnum):
    """What a store event announces (the key it comes with says about what)."""

    SETTLED = "settled"
    """A promise was settled; the key is its id."""
    MESSAGE = "message"
    """A message was created for an actor; the key is its recipient's id, the message's seq,
    the node holding the actor and its type, tab-separated."""
    TIMER = "timer"
    """A promise with a timeout was created; the key is ``""``."""
    ENDING = "ending"
    """An actor was marked to end (``Store.cancel_actor``, a stop); the key is its id."""
    ADOPTED = "adopted"
    """A dead node's actors were handed back to the fleet; the key is that node's id."""
    LIVE = "live"
    """Something happened that is announced, not kept (a model's text as it is written, a
    step just kept); the key is the announcement (``Store.announce``)."""


Event = tuple[EventKind, str] | tuple[EventKind, str, Any]
"""A change other parties may wait on: ``(EventKind.SETTLED, promise_id)``, say. A settle
written in this process may carry the settled ``Promise`` as a third item, which an
``Expectation`` of it takes instead of reading it back."""


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

    ``label`` names the kind of write (``"exit"``, ``"revive"``…) for logs and for the crash
    tests' fault injection (``$PROMISSORY_DROP_AT``).

    ``group`` lets ops of one kind share a statement: ops of a batch with the same
    ``Group.sql`` run as one multi-row statement (its parameters are the ops' ``values``
    column by column, as arrays), whose rows go back to each op by the id in their first
    column. An op with a group must have one statement, whose rows it receives either way.
    """

    __slots__ = (
        "statements",
        "finish",
        "events",
        "keys",
        "future",
        "reread",
        "group",
        "label",
        "settles",
        "parts",
        "meanwhile",
        "answered",
        "_size",
    )

    def __init__(
        self,
        statements: Sequence[Statement],
        finish: Callable[[list[Rows], int | None], Any],
        events: Callable[[Any], Sequence[Event]] | None = None,
        *,
        keys: Sequence[str] = (),
        reread: Statement | None = None,
        group: Group | None = None,
        label: str = "",
        settles: Sequence[str] = (),
    ) -> None:
        self.statements = statements
        self.finish = finish
        self.events = events
        self.keys = tuple(keys)
        self.future: WriteFuture[Any] = WriteFuture()
        self.reread = reread
        self.group = group
        self.label = label
        """What kind of write it is (``exit``, ``revive``…), for logs and fault injection."""
        self.parts: tuple[Op, ...] = ()
        """The ops a ``bundle`` is made of (its statements are theirs, in order)."""
        self.settles = tuple(settles)
        """Promises it settles whose settle event carries the record (see ``Event``)."""
        self.meanwhile: Callable[[], None] | None = None
        """Called once, when the batch's COMMIT is on its way, while the database works on it
        (a claiming send starts its actor's activation thread then); it must not raise."""
        self.answered: Callable[[list[int]], None] | None = None
        """Called once with the number of rows each of its statements returned, as soon as
        they are answered, while the batch's COMMIT is still on its way (the database is asked
        to send those answers first); it must not raise or block, and it learns nothing of
        whether the COMMIT holds. An op with one runs in no shared statement (``group``)."""
        self._size = -1

    @property
    def size(self) -> int:
        """Bytes of text and binary parameters: a batch stops growing past ``MAX_BATCH_BYTES``
        (counted when first asked: an op its caller writes alone never is).
        """
        if self._size < 0:
            self._size = _size(self.statements)
        return self._size


def bundle(ops: Sequence[Op], label: str | None = None) -> Op:
    """One op made of ``ops``, written in one transaction, in order: all or none of them.

    Its result is the list of the parts' results (a part's error is its result, as with ops
    of one batch; the others' writes stand). Its events are theirs.

    Example:
        >>> both = bundle([complete_op(...), revive_op(...)])  # doctest: +SKIP
        >>> completion, record = store.execute(both)  # doctest: +SKIP

    """
    parts = tuple(ops)
    if not parts:
        raise ValueError("a bundle needs at least one op")
    if any(op.parts for op in parts):
        raise ValueError("a bundle's parts are ops, not bundles")
    # A part of a group runs its own statement here (its rows are the same either way).

    def events(results: list[Any]) -> list[Event]:
        out: list[Event] = []
        for op, result in zip(parts, results, strict=True):
            if op.events is not None and not isinstance(result, BaseException):
                out.extend(op.events(result))
        return out

    whole = Op(
        [statement for op in parts for statement in op.statements],
        lambda rows, xid: None,  # the writer finishes each part (see ``parts``)
        events,
        keys=[key for op in parts for key in op.keys],
        label=label or "+".join(op.label for op in parts if op.label),
        settles=[key for op in parts for key in op.settles],
    )
    whole.parts = parts
    return whole


MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A batch takes no more ops once its parameters reach this many bytes; an op larger than it
is written in a batch of its own, so a big value never holds up (or bloats) others' commits."""


def _size(statements: Sequence[Statement]) -> int:
    size = 0
    for _, params in statements:
        for value in params.values() if isinstance(params, Mapping) else params:
            if isinstance(value, (str, bytes)):
                size += len(value)
    return size


class Group:
    """How an op joins others of its kind in one multi-row statement (see ``Op``)."""

    __slots__ = ("sql", "id", "values")

    def __init__(self, sql: str, id: str, values: Sequence[Any]) -> None:
        self.sql = sql
        self.id = id
        self.values = values
