"""The journal of one message: the steps already kept, and replay matching against them.

A handler run asks for durable operations in order; each gets the next position and the id
``{message id}/{position}``. If the journal holds a record at that id, the operation is a
replay: its fingerprint (kind, name, hash of the arguments) must match what is asked now, or
the replay raises ``NondeterminismError`` naming the step instead of mixing records.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..errors import NondeterminismError
from ..store import Promise
from ._ids import step_id

_encoder = msgspec.json.Encoder(order="sorted")


class StepKind(enum.StrEnum):
    """What a step did, as the first part of its fingerprint (``kind:name:hash``)."""

    STEP = "step"
    """``ctx.step``: a function run and its result kept (a model call, a tool call…)."""
    SLEEP = "sleep"
    """``ctx.sleep`` / ``sleep_until``: a durable timer."""
    RETRY = "retry"
    """The timer a step waits on between two attempts of a long backoff."""
    PROMISE = "promise"
    """``ctx.promise``: a promise something outside settles."""
    CALL = "call"
    """``ctx.call``: a message sent to an actor, its reply awaited."""
    SEND = "send"
    """``ctx.send``: a message sent to an actor, no reply awaited."""
    SPAWN = "spawn"
    """``ctx.spawn``: a child actor created."""
    WATCH = "watch"
    """``ctx.watch``: an actor watched."""
    NOW = "now"
    """``ctx.now``: the database's clock, read once and kept."""


def fingerprint(kind: StepKind, name: str | None = None, args: Any = None) -> str:
    """``kind:name:hash``, where the hash covers the JSON of ``args`` (or their type names);
    ``kind:name`` without ``args``, and ``kind`` alone without a name.

    Arguments that do not encode as JSON count by type name only, so an object that differs
    between runs (a client, a lock) does not make a replay fail.
    """
    if name is None:
        return str(kind)
    if args is None:
        return f"{kind}:{name}"
    try:
        data = _encoder.encode(args)
    except (TypeError, msgspec.EncodeError, OverflowError):
        data = repr(_type_names(args)).encode()
    digest = hashlib.blake2b(data, digest_size=6).hexdigest()
    return f"{kind}:{name}:{digest}"


def _type_names(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_type_names(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _type_names(v) for k, v in value.items()}
    try:
        _encoder.encode(value)
        return value
    except (TypeError, msgspec.EncodeError, OverflowError):
        return type(value).__qualname__


def callable_name(fn: Any) -> str:
    """A stable name for a function: ``module.qualname``."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{module}.{name}"


class Journal:
    """The kept steps of one message, by position, and the cursor of the handler run."""

    __slots__ = ("message_id", "_records", "position", "retry_step", "trusted")

    def __init__(
        self,
        message_id: str,
        records: Iterable[Promise] | Mapping[str, Promise] = (),
        retry_step: str | None = None,
        *,
        trusted: bool = False,
    ):
        self.message_id = message_id
        self.retry_step = retry_step
        self.trusted = trusted
        """Records are returned whatever is asked now (no fingerprint check): a fork reads the
        kept prefix of a run it changes (another prompt, model or tools) as it was kept."""
        items = records.values() if isinstance(records, Mapping) else records
        self._records: dict[str, Promise] = {p.id: p for p in items}
        self.position = 0

    def __len__(self) -> int:
        return len(self._records)

    def next(self) -> str:
        """Advance to the next operation and return its step id."""
        self.position += 1
        return step_id(self.message_id, self.position)

    def lookup(self, id: str, fp: str, *former: str) -> Promise | None:
        """The record kept at ``id`` for an operation fingerprinted ``fp`` (or one of the
        ``former`` fingerprints the same operation had in an earlier version), or ``None``.

        Raises:
            NondeterminismError: the record at ``id`` was made for something else.

        """
        record = self._records.get(id)
        if record is None:
            return None
        if record.fingerprint not in former and not self.trusted:
            check_fingerprint(id, record.fingerprint, fp)
        return record

    def attempt(self, id: str, fp: str) -> tuple[str, Promise | None]:
        """The id a step at base id ``id`` runs under now, and the record kept there.

        A step whose failure crashed the actor (``retry_step``) is tried again by the next
        incarnation under ``{id}~1`` (then ``~2``…): its failure stays kept, as every settled
        promise does, and later replays follow the newest attempt.
        """
        current, record, k = id, self._records.get(id), 0
        while (newer := self._records.get(f"{id}~{k + 1}")) is not None:
            k += 1
            current, record = f"{id}~{k}", newer
        if record is not None and not self.trusted:
            check_fingerprint(current, record.fingerprint, fp)
            if record.state.rejected and current == self.retry_step:
                return f"{id}~{k + 1}", None
        return current, record

    def before(self, position: int) -> Journal:
        """A trusted journal of this one's records at positions before ``position`` (a
        fork's kept prefix); other records (a step's later attempts, ``{id}~N``, count by
        their base position) are left out from there on.
        """
        kept = [r for r in self._records.values() if _position(self.message_id, r.id) < position]
        return Journal(self.message_id, kept, trusted=True)

    def get(self, id: str) -> Promise | None:
        """The record kept at ``id``, unchecked."""
        return self._records.get(id)

    def keep(self, record: Promise) -> None:
        """Remember a record just written, so a later lookup in this run finds it.

        Safe from several threads (``step_many``): a dict item assignment is atomic.
        """
        self._records[record.id] = record


def _position(message_id: str, id: str) -> float:
    """The position of the step ``id`` of ``message_id`` (``inf`` for what is not a step)."""
    tail = id[len(message_id) + 1 :].split("~", 1)[0]
    return int(tail) if id.startswith(message_id + "/") and tail.isdigit() else float("inf")


def check_fingerprint(id: str, kept: str | None, asked: str) -> None:
    """Raise ``NondeterminismError`` unless what was kept at ``id`` is what is asked now."""
    if kept is None or kept == asked:
        return
    raise NondeterminismError(
        f"replay of step {id} asked for {asked!r} but the journal holds {kept!r}; the handler's "
        "durable operations changed between runs (code, prompt or non-deterministic input)",
        id,
    )
