"""``Runtime``: the composition root of a node, and the API users hold.

Opening a runtime opens the store (the embedded server when no DSN is configured), starts the
event loop thread, takes a node lease, runs the recovery pass, starts the timer service, and
only then accepts work. Closing it drains: no new work, in-flight handlers finish their
current message (or are left to the next recovery), the lease is handed back.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..actors import ActorRef, ChildSpec, DurableActor, Restart
from ..actors._actor import check_state
from ..actors._messages import start_message
from ..errors import ActorNotFoundError, InvalidInputError, PromissoryError
from ..store import PromiseState, Store, Timeout, encode, resolve_dsn
from ..store._actors import ENDING, mark_ending_op, spawn_op
from ..store._nodes import NodeLease, lock_connection, new_node_id
from ..store._validate import MAX_ACTOR_ID_LENGTH, check_id
from ._exits import Exits
from ._host import NodeHost
from ._loop import LoopThread
from ._recovery import RecoveryReport, recover
from ._timers import TimerService

log = logging.getLogger("promissory.runtime")
T = TypeVar("T")

__all__ = ["Runtime"]


class Runtime:
    """A node of promissory: hosts durable actors, fires timers, recovers after crashes.

    Args:
        dsn: the PostgreSQL to use; ``None`` means ``$PROMISSORY_DSN``, else the embedded
            server.
        actors: actor classes this node hosts (others are imported by name on demand).
        suspend_after: seconds a handler waits in its thread on a pending promise before it
            suspends and frees the thread.
        idle_timeout: seconds an idle activation keeps its thread before it is passivated.
        reconnect_timeout: how long store operations wait for a lost database.
        connect_timeout: how long opening waits for the database (default: the same).
        cleanup_timeout: seconds a canceled handler may go on with durable operations to clean
            up (after its first ``Cancelled``) before they raise ``Cancelled`` for good.

    Example:
        >>> with Runtime() as rt:  # doctest: +SKIP
        ...     counter = rt.spawn(Counter, id="counters/main")
        ...     counter.ask(Add(by=2)).get(timeout=5)
        2

    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        actors: Iterable[type[DurableActor[Any]]] = (),
        suspend_after: float = 0.1,
        idle_timeout: float = 2.0,
        reconnect_timeout: float = 30.0,
        connect_timeout: float | None = None,
        cleanup_timeout: float = 30.0,
    ) -> None:
        self._dsn_arg = dsn
        self._actor_classes = list(actors)
        self._suspend_after = suspend_after
        self._idle_timeout = idle_timeout
        self._reconnect_timeout = reconnect_timeout
        self._connect_timeout = connect_timeout
        if not cleanup_timeout >= 0:
            raise InvalidInputError(f"cleanup_timeout must be ≥ 0 seconds, not {cleanup_timeout!r}")
        self._cleanup_timeout = cleanup_timeout
        self._started = False
        self.store: Store | None = None
        self.recovery: RecoveryReport | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open the store, recover, and start serving (``with Runtime()`` calls it). Idempotent."""
        if self._started:
            return self
        started = time.monotonic()
        dsn = resolve_dsn(self._dsn_arg)
        # Started first, to overlap the store's own connection and checks: the event loop's
        # thread, and the lease's connection taking this node's lock (a restart's time to
        # resume is mostly connections being made).
        node_id = new_node_id()
        first = self._connect_timeout or self._reconnect_timeout
        locking = _in_background(lambda: lock_connection(dsn, node_id, first))
        self.loop = LoopThread()
        try:
            self.store = store = Store(
                dsn,
                reconnect_timeout=self._reconnect_timeout,
                connect_timeout=self._connect_timeout,
            )
        except BaseException:
            self.loop.close()
            _close_when_done(locking)
            raise
        try:
            locked = locking.result()
        except BaseException:
            self.loop.close()
            store.close()
            raise
        store.start_listening()  # connects while the lease records the node
        self.lease = NodeLease(store, node_id, locked=locked)
        self.node_id = self.lease.node_id
        self.host = NodeHost(
            store,
            self.loop,
            self.node_id,
            suspend_after=self._suspend_after,
            idle_timeout=self._idle_timeout,
            cleanup_timeout=self._cleanup_timeout,
            on_exit=lambda *args: self.exits.handle(*args),
        )
        self.exits = Exits(store, self.host)
        for cls in self._actor_classes:
            self.host.register(cls)
        self._message_sub = store.subscribe(
            "message", [""], lambda kind, key, resync: self._remote_message(key, resync)
        )
        self._enders: list[threading.Thread] = []
        self._ending_sub = store.subscribe(
            "ending", [""], lambda kind, key, resync: self._ending(key, resync)
        )
        self.recovery = recover(store, self.host)
        # Trees whose end was kept but cut off by a crash (or kept while nothing ran).
        self._ending("", resync=True)
        self.timers = TimerService(store, self.loop, self.host.executor)
        self.timers.start()
        self._started = True
        self.started_in = time.monotonic() - started
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Drain and stop: in-flight handlers finish their message; the lease is handed back."""
        if not self._started:
            return
        self._started = False
        self._message_sub.cancel()
        self._ending_sub.cancel()
        for thread in self._enders:  # trees being ended finish first (or are left to recovery)
            thread.join(timeout)
        self.timers.close()
        self.host.close(timeout)
        self.lease.release(release_actors=True)
        self.loop.close()
        assert self.store is not None
        self.store.close()

    def __enter__(self) -> Runtime:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- actors --------------------------------------------------------------------------------

    def spawn(
        self,
        actor_class: type[DurableActor[Any]],
        *,
        id: str,
        state: Any = None,
        spec: ChildSpec | None = None,
    ) -> ActorRef:
        """Create a top-level actor (or find it: spawning an existing id is idempotent).

        An actor of that id that was stopped or failed is brought back with ``state``. Its
        ``spec`` (default: transient, intensity 1 in 5 s) says how the runtime, the root of
        every tree, treats its failures: a crashed transient actor is restarted and the
        message it failed on handled again; past the intensity it is given up and its pending
        messages are rejected with its error.

        Raises:
            ActorExistsError: an actor with this id exists, of another class.

        """
        store = self._store()
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        check_state(actor_class, state)
        self.host.register(actor_class)
        kind = actor_class.kind()
        op = spawn_op(
            id,
            parent=None,
            kind=kind,
            spec=encode(spec or ChildSpec(restart=Restart.TRANSIENT), what="child spec"),
            state=encode(state, what="state") if state is not None else None,
            start=start_message(actor_class),
        )
        record, created, _ = store.execute(op)
        self.host.spawned(id, kind)
        if created:
            self.host.deliver(id, None)
        return self.host.ref(id)

    def run(
        self,
        runnable: Any,
        input: Any,
        *,
        id: str | None = None,
        deadline: Timeout = None,
        timeout: float | None = None,
    ) -> Any:
        """Run an agent (or anything with ``start(rt, input, id=)``) and return its output.

        ``deadline`` bounds the run itself (durably: past it the run times out, whether or not
        a process is up); ``timeout`` only bounds how long this call waits.

        Example:
            >>> answer = rt.run(lead, "Compare X and Y", id="agent/run/42")  # doctest: +SKIP

        """
        return self.start(runnable, input, id=id, deadline=deadline).result(timeout)

    def start(
        self, runnable: Any, input: Any, *, id: str | None = None, deadline: Timeout = None
    ) -> Any:
        """Start an agent run and return its handle, to wait on now, later, or elsewhere."""
        self._store()
        start = getattr(runnable, "start", None)
        if start is None:
            raise TypeError(f"{runnable!r} cannot be run: it has no start(rt, input, id=...)")
        return start(self, input, id=id, deadline=deadline)

    def resume(self, id: str) -> Any:
        """Continue a canceled or timed-out run from its last kept turn; return the new run's
        handle. Its actor's class decides how (agent runs: ``AgentRun.resume``).

        Raises:
            PromiseNotFoundError: no run has this id.
            InvalidInputError: it is still running, or it finished, or it cannot be resumed.

        """
        store = self._store()
        run = store.get(id)
        if run.state is PromiseState.PENDING:
            raise InvalidInputError(f"{id!r} is still running; nothing to resume")
        if run.state is PromiseState.RESOLVED or run.recipient is None:
            raise InvalidInputError(
                f"{id!r} is {run.state.value}; only a canceled or timed-out run can be resumed"
            )
        query = "SELECT kind FROM actors WHERE id = %s"
        row = store.read(lambda conn: conn.execute(query, (run.recipient,)).fetchone())
        resume = getattr(self.host.resolve_class(row[0]), "resume", None) if row else None
        if resume is None:
            raise InvalidInputError(f"{id!r} cannot be resumed: its actor does not say how")
        return resume(self, id)

    def ref(self, id: str) -> ActorRef:
        """A ref to the actor ``id`` (which need not be hosted by this node)."""
        self._store()
        return self.host.ref(id)

    def stop(self, id: str) -> bool:
        """Stop an actor and everything under it, children first; pending messages are
        rejected with ``ActorStoppedError`` and watchers are told. Returns whether it was alive.
        The stop is kept before it starts, so a crash half-way is finished by recovery.
        """
        store = self._store()
        found, marked, _ = store.execute(mark_ending_op(id, store.channel))
        if not (found and marked):
            return False
        self.exits.end_marked(id)
        return True

    # -- cancellation ------------------------------------------------------------------------------

    def cancel(self, id: str, reason: str = "canceled") -> bool:
        """Cancel a run (a promise) or an actor, and everything under it; durably.

        For a promise (an agent run, a message, an approval): it and every pending promise
        under it are canceled in one transaction (the store does it, whoever cancels); the
        handlers running them see ``Cancelled`` at their next durable operation and may clean
        up. For an actor: in one transaction its pending messages are canceled so and it is
        marked to end (``Store.cancel_actor``), then it and its children are stopped, children
        first, each after its handlers' cleanup. A crash half-way is finished by the next
        start's recovery. Returns whether anything was pending to cancel.

        Example:
            >>> rt.cancel("agent/run/42", reason="the user closed the tab")  # doctest: +SKIP
            True

        """
        store = self._store()
        promise = store.find(id)
        if promise is not None:
            return bool(store.cancel(id, reason).applied)
        try:
            outcome = store.cancel_actor(id, reason)
        except ActorNotFoundError:
            return False
        if outcome.applied:
            self.exits.end_marked(id)
        return outcome.applied

    # -- plumbing ------------------------------------------------------------------------------

    def _remote_message(self, key: str, resync: bool) -> None:
        if resync or not key:
            return
        actor_id, _, seq = key.partition("\t")
        # A message sent in this process is handed to its activation directly, and its NOTIFY
        # comes back a moment later; a short grace lets the direct hand-over land first, so
        # the echo is recognised instead of costing a mailbox read.
        self.loop.call_later(
            0.005,
            self.host.submit,
            self.host.nudge,
            actor_id,
            int(seq) if seq.isdigit() else None,
        )

    def _ending(self, actor_id: str, resync: bool) -> None:
        store = self.store
        if store is None:
            return
        if resync:  # notices may have been missed: look for every tree left to end
            rows = store.read(lambda conn: conn.execute(ENDING, (self.node_id,)).fetchall())
            ids = [row[0] for row in rows]
        else:
            ids = [actor_id] if actor_id else []
        for id in ids:
            # Its own thread: ending a tree waits out its handlers' cleanups.
            thread = threading.Thread(
                target=self._end_marked, args=(id,), name="promissory-end", daemon=True
            )
            self._enders.append(thread)
            thread.start()

    def _end_marked(self, actor_id: str) -> None:
        try:
            self.exits.end_marked(actor_id)
        except Exception:
            # Kept in the store: the next start's recovery (or a resync) finishes it.
            log.exception("ending the tree of %s failed; the next start finishes it", actor_id)

    def _store(self) -> Store:
        if not self._started or self.store is None:
            raise PromissoryError("the runtime is not open (use `with Runtime() as rt:`)")
        return self.store


def _db_now(store: Store) -> float:
    row = store.read(
        lambda conn: conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    )
    return float(row[0]) if row else time.time()


def _in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """``fn()`` run in a thread of its own, as a future."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="promissory-open", daemon=True).start()
    return future


def _close_when_done(future: concurrent.futures.Future[Any]) -> None:
    """Close the connection ``future`` makes, whenever it is made (an open that failed)."""

    def close(done: concurrent.futures.Future[Any]) -> None:
        if done.exception() is None:
            done.result().close()

    future.add_done_callback(close)
