"""``ActorRef`` and ``Reply``: addressing an actor by id, and the future of an ``ask``.

A ref is only an id and a store: it works from any thread, inside or outside an actor, and
from a process that hosts no actors at all. ``tell`` and ``ask`` return once the message is
committed (write-ahead); the hosting node learns of it in-process or by NOTIFY.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from .. import _tracing
from .._crashpoints import reached
from ..store import (
    MAX_ACTOR_ID_LENGTH,
    EventKind,
    Expectation,
    Op,
    Promise,
    Sent,
    Store,
    Timeout,
    check_id,
    encode,
    send_op,
    timeout_parts,
)
from ._ids import new_message_id
from ._messages import encode_message, message_tags, type_name
from ._outcome import result_of

T = TypeVar("T")


class Delivery(Protocol):
    """How a runtime hands a just-committed message to the actor in this process, if it hosts
    it: told before the send (``sending``: a NOTIFY of the message that overtakes the send's
    return is then not taken for another's) and after it (``sent``: what the send wrote, or
    ``None`` when it failed; ``mark``, the store's settle mark from before it).
    """

    node_id: str
    """The node this process runs: a message it hands over itself is not announced."""

    def sending(self, actor_id: str, claim: bool = False) -> str | None: ...

    def sent(
        self, actor_id: str, sent: Sent | None, mark: int, claim: str | None = None
    ) -> None: ...

    def warm(self, actor_id: str) -> None: ...


__all__ = ["ActorRef", "Reply"]


class ActorRef:
    """The address of an actor: its id, and the store its mailbox lives in.

    Example:
        >>> ref = rt.ref("billing/invoices")  # doctest: +SKIP
        >>> ref.tell(Charge(order=7))  # doctest: +SKIP
        'billing/invoices/m-…'
        >>> ref.ask(Total()).get(timeout=5)  # doctest: +SKIP
        120

    """

    __slots__ = ("id", "_store", "_deliver")

    def __init__(self, id: str, store: Store, deliver: Delivery | None = None) -> None:
        self.id = check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        self._store = store
        self._deliver = deliver

    def tell(
        self,
        msg: Any,
        *,
        id: str | None = None,
        timeout: Timeout = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Send ``msg``; return its message id once it is committed.

        Args:
            msg: any msgspec-encodable value the actor has a handler for.
            id: the message id (an idempotency key: a repeat send is a no-op); by default a
                fresh ``{actor id}/m-…``.
            timeout: a deadline for handling it (seconds, ``timedelta`` or ``datetime``).
            tags: extra tags to store with it.

        Raises:
            ActorNotFoundError: no actor has this id (nothing is written).
            ActorStoppedError: the actor is stopped or failed (nothing is written).
            EncodeError: the message cannot be encoded (nothing is written).
            StoreUnavailableError: with a ``timeout``, the database did not keep the message
                within it (the message says whether it was withdrawn or may still be kept).

        """
        return self._send(msg, self._message_id(id), timeout, tags).promise.id

    def ask(
        self,
        msg: Any,
        *,
        id: str | None = None,
        timeout: Timeout = None,
        tags: Mapping[str, str] | None = None,
    ) -> Reply[Any]:
        """Send ``msg`` and return a ``Reply`` bound to it; see ``tell`` for the arguments."""
        return self._ask(msg, id, timeout, tags)

    def _ask(
        self,
        msg: Any,
        id: str | None,
        timeout: Timeout,
        tags: Mapping[str, str] | None,
        write: Callable[..., Op] | None = None,
        kind: str | None = None,
        written: Callable[[], None] | None = None,
        new: bool = False,
    ) -> Reply[Any]:
        """``ask``; ``write`` makes the op the message is written by, from ``send_op``'s
        arguments (a spawn that sends its new actor a first message in one transaction:
        ``Runtime.spawn_ask``); its result is a ``Sent``. ``kind``: the message is written
        only to an actor of that type. ``written``: called once the message is written and
        the actor claimed for this node, while the COMMIT is on its way, or (``new``: the
        message's id was made up just now, so it cannot be there) as soon as it is sent (see
        ``Runtime.spawn_ask``).
        """
        message_id = self._message_id(id)
        # Expected before it is written, so its settle in this process is caught with its
        # value: the reply costs no read.
        expected = self._store.expect(message_id)
        try:
            sent = self._send(msg, message_id, timeout, tags, write, kind, written, new)
        except BaseException:
            expected.cancel()
            raise
        return Reply(
            sent.promise.id,
            self._store,
            expected=expected,
            pending=sent.promise,
            written=sent.applied,
        )

    def _message_id(self, id: str | None) -> str:
        return check_id(id) if id is not None else new_message_id(self.id)

    def _send(
        self,
        msg: Any,
        message_id: str,
        timeout: Timeout,
        tags: Mapping[str, str] | None,
        write: Callable[..., Op] | None = None,
        kind: str | None = None,
        written: Callable[[], None] | None = None,
        new: bool = False,
    ) -> Sent:
        with _tracing.producer(self.id, type_name(msg), message_id):
            return self._commit(msg, message_id, timeout, tags, write, kind, written, new)

    def _commit(
        self,
        msg: Any,
        message_id: str,
        timeout: Timeout,
        tags: Mapping[str, str] | None,
        write: Callable[..., Op] | None,
        kind: str | None,
        written: Callable[[], None] | None = None,
        new: bool = False,
    ) -> Sent:
        param = encode_message(msg)
        tag_json = encode(message_tags(msg, dict(tags) if tags else None), what="tags")
        secs, at = timeout_parts(timeout)
        # A message with a deadline is not waited on past it: the send returns within it too.
        within = secs if at is None else (at - datetime.now(UTC)).total_seconds()
        limit = None if within is None else max(0.0, within)
        mark = self._store.mark()
        write = write or send_op
        if self._deliver is None:
            op = write(message_id, self.id, param=param, tags=tag_json, secs=secs, at=at, kind=kind)
            sent: Sent = self._store.execute(op, timeout=limit)
            return sent
        # An actor this node holds with no activation (passivated, or spawned and not yet
        # started) is claimed by the send itself: its activation starts with no write.
        claim = self._deliver.sending(self.id, claim=True)
        try:
            op = write(
                message_id,
                self.id,
                param=param,
                tags=tag_json,
                secs=secs,
                at=at,
                claim=claim,
                kind=kind,
                # ``sent`` hands it over below. Not a send that may give up waiting (a
                # deadline): one that commits after that is announced, so it is still run.
                handed=self._deliver.node_id if limit is None else None,
            )
            if claim is not None:
                # The activation's thread starts while the send commits (not after it).
                warm = functools.partial(self._deliver.warm, self.id)
                op.meanwhile = warm
                if written is not None and new:
                    op.meanwhile = _both(written, warm)
                elif written is not None:
                    op.answered = _if_written(written)
            sent = self._store.execute(op, timeout=limit)
        except BaseException:
            # Whatever failed, ``sending`` is ended: deliveries to the actor go on.
            self._deliver.sent(self.id, None, mark, claim)
            raise
        try:
            reached("message.committed", message_id)
        finally:
            self._deliver.sent(self.id, sent, mark, claim)
        return sent

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"ActorRef({self.id!r})"


class Reply(Generic[T]):
    """The future reply to an ``ask``: the message promise, read when it settles.

    ``get`` blocks the calling thread; ``await reply`` waits without blocking an event loop.
    A reply can also be rebuilt from its id in another process: ``Reply(id, store)``.
    """

    __slots__ = ("id", "written", "_store", "_type", "_expected", "_pending", "__weakref__")

    def __init__(
        self,
        id: str,
        store: Store,
        type: Any = Any,
        *,
        expected: Expectation | None = None,
        pending: Promise | None = None,
        written: bool | None = None,
    ) -> None:
        self.id = id
        self.written = written
        """Whether the ``ask`` this reply came from wrote its message: ``False`` when a
        message with that id was there already (an idempotent repeat: this is its reply);
        ``None`` for a reply rebuilt from its id."""
        self._store = store
        self._type = type
        self._expected = expected
        self._pending = pending
        if expected is not None:
            weakref.finalize(self, expected.cancel)

    def get(self, timeout: float | None = None, *, type: Any = None) -> T:
        """The reply, decoded as ``type``; raises what the handler's failure became.

        Raises:
            TimeoutError: ``timeout`` seconds passed with the message still pending.

        """
        pending, self._pending = self._pending, None
        promise = self._store.wait(self.id, timeout, expected=self._expected, pending=pending)
        return result_of(promise, type if type is not None else self._type)  # type: ignore[no-any-return]

    @property
    def sent(self) -> Promise | None:
        """The message as the ask that made this reply wrote it (``None``: rebuilt from its
        id, or waited on already).
        """
        return self._pending

    def promise(self) -> Promise:
        """The message promise as it stands now."""
        return self._store.get(self.id)

    def done(self) -> bool:
        """Whether the message has been settled."""
        return self._store.get(self.id).state.settled

    def __await__(self) -> Generator[Any, None, T]:
        return self._wait_async().__await__()

    async def _wait_async(self) -> T:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def on_settled(kind: str, key: str, resync: bool) -> None:
            loop.call_soon_threadsafe(woken.set)

        sub = self._store.subscribe(EventKind.SETTLED, [self.id], on_settled)
        try:
            while True:
                promise = await asyncio.to_thread(self._store.get, self.id)
                if promise.state.settled:
                    return result_of(promise, self._type)  # type: ignore[no-any-return]
                pause = None
                if promise.timeout_at is not None:
                    pause = max(0.01, promise.timeout_at.timestamp() - time.time() + 0.005)
                try:
                    await asyncio.wait_for(woken.wait(), pause)
                except TimeoutError:
                    pass
                woken.clear()
        finally:
            sub.cancel()

    def __repr__(self) -> str:
        return f"Reply({self.id!r})"


def _if_written(then: Callable[[], None]) -> Callable[[list[int]], None]:
    """An ``Op.answered`` that calls ``then`` if the send wrote its message: a send's first
    statement returns the message's row only then (``send_op``, ``spawn_send_op``).
    """

    def answered(counts: list[int]) -> None:
        if counts and counts[0]:
            then()

    return answered


def _both(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        then()

    return both
