"""``Runtime``: the composition root of a node, and the API users hold.

Opening a runtime opens the store (the embedded server when no DSN is configured), starts the
event loop thread, takes a node lease, runs the recovery pass, starts the timer service, and
only then accepts work. Closing it drains: no new work, in-flight handlers finish their
current message (or are left to the next recovery), the lease is handed back.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import msgspec

from .. import _tracing
from ..actors import (
    ActorRef,
    ChildSpec,
    DurableActor,
    Reply,
    Restart,
    check_hostable_name,
    check_state,
    new_message_id,
    start_message,
)
from ..errors import (
    ActorNotFoundError,
    InvalidDefinitionError,
    InvalidInputError,
    PromissoryError,
    StoreError,
)
from ..protocol import ProtocolServer
from ..store import (
    LEASE_TRUST,
    MAX_ACTOR_ID_LENGTH,
    EventKind,
    NodeLease,
    Occupied,
    Op,
    PromiseState,
    Store,
    Timeout,
    check_id,
    decode,
    describe,
    encode,
    lock_connection,
    mark_ending_op,
    new_node_id,
    resolve_dsn,
    send_op,
    spawn_op,
    spawn_send_op,
)
from ._eventloop import LoopThread
from ._exits import Exits
from ._fleet import Fleet
from ._host import NodeHost
from ._recovery import RecoveryReport, recover
from ._retention import retention_seconds
from ._scheduler import ScheduleMethods, Scheduler
from ._timers import TimerService

log = logging.getLogger("promissory.runtime")
T = TypeVar("T")

__all__ = ["Runtime"]


class _TopSpawn(msgspec.Struct, frozen=True, kw_only=True):
    """A top-level spawn, checked: what its writes are made of (``Runtime.spawn``,
    ``Runtime.spawn_ask``).
    """

    id: str
    kind: str
    spec: str
    state: str | None
    start: tuple[str, str] | None
    supervisor: bool
    node: str | None
    revive: bool = True

    def op(self, step: Op | None = None, first: str | None = None) -> Op:
        """The spawn (``spawn_op``), with ``step`` in its transaction if given."""
        return spawn_op(
            self.id,
            parent=None,
            kind=self.kind,
            spec=self.spec,
            state=self.state,
            start=self.start,
            supervisor=self.supervisor,
            node=self.node,
            step=step,
            revive=self.revive,
            first=first,
        )

    def then_send(self, message_id: str, recipient: str, **send: Any) -> Op:
        """The spawn, then the send of its first message (``send_op``'s arguments), in one
        transaction; its result is the send's.
        """
        spawn = self.op(send_op(message_id, recipient, **send), message_id)
        return Op(spawn.statements, lambda rows, xid: spawn.finish(rows, xid)[2], label="spawn")

    def with_message(self, message_id: str, recipient: str, **send: Any) -> Op:
        """A new actor and its first message in one statement (``spawn_send_op``); raises
        ``Occupied`` when either exists.
        """
        send.pop("kind", None)
        return spawn_send_op(
            message_id,
            recipient,
            kind=self.kind,
            spec=self.spec,
            state=self.state,
            supervisor=self.supervisor,
            node=self.node,
            claim=send.pop("claim", None),
            **send,
        )


class Runtime(ScheduleMethods):
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
            up (after its first ``Canceled``) before they raise ``Canceled`` for good.
        hosts: the actor types this node hosts: actor classes, agents, or type names. By
            default, every type defined (imported) in this process: a node runs only actors
            whose class it has, and leaves the others to nodes that have theirs.
        adopt_interval: seconds between this node's looks at the fleet (a dead node's actors
            are taken up by the live ones within about this, plus ``adopt_grace``).
        adopt_grace: seconds a node seen alive and then gone is given to notice that itself
            and fence off its handlers before its actors are adopted.
        retention: forget top-level runs (agent runs started with ``run``/``start``) that
            finished longer ago than this (a ``timedelta`` or seconds), with all of theirs, as
            ``Store.forget`` does; by the database's clock, in bounded batches, on every node
            given it. ``None`` (the default) keeps everything.
        schedule_poll: the longest a node's scheduler sleeps between looks at the schedules
            (it wakes for the next firing it knows of; this bounds how late it sees a
            schedule made or changed by another node).
        serve: also serve the durable-promise protocol (Resonate's), so Resonate SDK workers
            run on this store: a ``ProtocolServer``, a port (on 127.0.0.1), or
            ``"host:port"``. Its URL is ``protocol_url`` once open. ``None`` (the default)
            serves nothing.

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
        hosts: Iterable[Any] | None = None,
        adopt_interval: float = 0.25,
        adopt_grace: float = 0.6,
        retention: timedelta | float | None = None,
        schedule_poll: float = 5.0,
        serve: ProtocolServer | int | str | None = None,
    ) -> None:
        self._dsn_arg = dsn
        self._actor_classes = list(actors)
        self._hosts = None if hosts is None else frozenset(_type_name(h) for h in hosts)
        if not adopt_grace > LEASE_TRUST:
            raise InvalidInputError(
                f"adopt_grace must be more than {LEASE_TRUST} s (how long a node trusts its "
                f"lease without asking), not {adopt_grace!r}: else a node that lost its lease "
                "could still be running an actor another node adopts"
            )
        self._adopt_interval = adopt_interval
        self._adopt_grace = adopt_grace
        self._rejoining = threading.Lock()
        self._suspend_after = suspend_after
        self._idle_timeout = idle_timeout
        self._reconnect_timeout = reconnect_timeout
        self._connect_timeout = connect_timeout
        if not cleanup_timeout >= 0:
            raise InvalidInputError(f"cleanup_timeout must be ≥ 0 seconds, not {cleanup_timeout!r}")
        self._cleanup_timeout = cleanup_timeout
        self._retention = retention_seconds(retention) if retention is not None else None
        self._schedule_poll = schedule_poll
        self._started = False
        self.store: Store | None = None
        self.recovery: RecoveryReport | None = None
        self.protocol: ProtocolServer | None = _protocol_server(serve)

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open the store, recover, and start serving (``with Runtime()`` calls it). Idempotent."""
        if self._started:
            return self
        started = time.monotonic()
        _tracing.configure_from_environment()
        dsn = resolve_dsn(self._dsn_arg)
        # Started first, to overlap the store's own connection and checks: the event loop's
        # thread, and the lease's connection taking this node's lock (a restart's time to
        # resume is mostly connections being made).
        node_id = new_node_id()
        first = self._connect_timeout or self._reconnect_timeout
        locking = _in_background(lambda: lock_connection(dsn, node_id, first))
        # An open that fails half-way closes what it opened, in reverse: no thread, connection
        # or lease is left behind to hold a later open's actors.
        with contextlib.ExitStack() as opened:
            leased = False
            opened.callback(lambda: None if leased else _close_when_done(locking))
            self.loop = LoopThread()
            opened.callback(self.loop.close)
            self.store = store = Store(
                dsn,
                reconnect_timeout=self._reconnect_timeout,
                connect_timeout=self._connect_timeout,
            )
            opened.callback(store.close)
            locked = locking.result()
            store.start_listening()  # connects while the lease records the node
            self.node_id = node_id
            self.host = NodeHost(
                store,
                self.loop,
                node_id,
                suspend_after=self._suspend_after,
                idle_timeout=self._idle_timeout,
                cleanup_timeout=self._cleanup_timeout,
                on_exit=lambda *args: self.exits.handle(*args),
                on_end_children=lambda actor_id: self.exits.end_children(actor_id),
                hosts=self._hosts,
            )
            opened.callback(self.host.close)
            for cls in self._actor_classes:
                self.host.register(cls)
            self.lease = NodeLease(
                store,
                node_id,
                locked=locked,
                kinds=self.host.hosted_kinds(),
                on_lost=self._lease_lost,
            )
            leased = True
            opened.callback(lambda: self.lease.release(release_actors=True))
            self.host.lease_held = lambda: self.lease.verified()
            self.fleet = Fleet(
                store,
                lambda: self.host.node_id,
                self.host.hosted_kinds,
                take_up=self._take_up,
                publish=lambda kinds: self.lease.set_kinds(kinds),
                interval=self._adopt_interval,
                grace=self._adopt_grace,
            )
            self.host.mine = self.fleet.mine
            self.exits = Exits(store, self.host)
            self._message_sub = store.subscribe(
                EventKind.MESSAGE,
                [""],
                lambda kind, key, resync: self._remote_message(key, resync),
            )
            self._enders: list[threading.Thread] = []
            self._ending_sub = store.subscribe(
                EventKind.ENDING, [""], lambda kind, key, resync: self._ending(key, resync)
            )
            # A dead node's actors were handed back (by any node): take up this node's share.
            self._adopted_sub = store.subscribe(
                EventKind.ADOPTED,
                [""],
                lambda kind, key, resync: None if resync else self._adopted(key),
            )
            self.fleet.tick(first=True)  # adopt the dead, then the recovery pass
            # Trees whose end was kept but cut off by a crash (or kept while nothing ran).
            self._ending("", resync=True)
            self.timers = TimerService(
                store, self.loop, self.host.executor, retention=self._retention
            )
            self.timers.start()
            self.scheduler = Scheduler(
                store,
                lambda: self.host.node_id,
                self.host.hosted_kinds,
                self._start_scheduled,
                poll=self._schedule_poll,
            )
            self.scheduler.start()
            opened.callback(self.scheduler.close)
            self.fleet.start()
            opened.callback(self.fleet.stop)
            opened.pop_all()
        self._started = True
        if self.protocol is not None:
            try:
                self.protocol.start(dsn)
            except BaseException:
                self.close()
                raise
        self.started_in = time.monotonic() - started
        return self

    @property
    def protocol_url(self) -> str | None:
        """The URL of the durable-promise protocol this node serves (``serve=``), or ``None``."""
        return self.protocol.url if self.protocol is not None else None

    def close(self, timeout: float = 10.0) -> None:
        """Drain and stop: in-flight handlers finish their message; the lease is handed back.

        It waits at most ``timeout`` seconds in all for the handlers still running; those
        that have not finished by then run on fenced off (nothing more they do is kept) and
        are named in one warning, and their messages are handled again by the next node.
        """
        if not self._started:
            return
        self._started = False
        if self.protocol is not None:
            self.protocol.stop()
        self.fleet.stop()
        self.scheduler.close()
        self._message_sub.cancel()
        self._ending_sub.cancel()
        self._adopted_sub.cancel()
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
        top = self._spawning(actor_class, id, state, spec)
        record, created, _ = store.execute(top.op())
        self.host.spawned(id, top.kind)
        if created:
            self.host.deliver(id, None)
        return self.host.ref(id)

    def spawn_ask(
        self,
        actor_class: type[DurableActor[Any]],
        msg: Any,
        *,
        id: str,
        message_id: str | None = None,
        state: Any = None,
        spec: ChildSpec | None = None,
        timeout: Timeout = None,
        tags: Mapping[str, str] | None = None,
        revive: bool = True,
        written: Callable[[], None] | None = None,
        new: bool = False,
    ) -> Reply[Any]:
        """Create a top-level actor (as ``spawn``) and ask it ``msg``, in one transaction.

        One commit keeps the actor, its first message and this node's claim on it, and its
        activation starts that message with no write or read of its own: the quickest way
        from nothing to a running handler (an agent run starts this way). ``message_id``,
        ``timeout`` and ``tags`` are ``ask``'s ``id``, ``timeout`` and ``tags``. An actor
        that exists already is sent the message (as ``spawn`` then ``ask`` would); one that
        stopped or failed is brought back first unless ``revive`` is false. A
        ``message_id`` that exists already is not sent again: ``Reply.written`` is false,
        and the reply is that message's. ``written`` is called once the new actor and its
        message are written and claimed for this node, while their COMMIT is on its way (not
        when either exists already, nor when another node is to run it); it must not block or
        raise, and the commit may still fail (an agent run asks its model then: ``_early``).
        ``new``: ``id`` and ``message_id`` were made up just now, so neither is there:
        ``written`` is called as soon as the statement is sent, not once it is answered.

        Example:
            >>> reply = rt.spawn_ask(Summarizer, Summarize("…"), id="sums/42")  # doctest: +SKIP
            >>> reply.get(timeout=30)  # doctest: +SKIP

        Raises:
            ActorExistsError: an actor with this id exists, of another class.

        """
        self._store()
        top = self._spawning(actor_class, id, state, spec, revive)
        # Known before the send, so the send claims the new actor for this node.
        noted = self.host.note_kind(id, top.kind)
        first = check_id(message_id) if message_id is not None else new_message_id(id)
        ref = self.host.ref(id)
        try:
            if top.start is None:
                # A new actor: one statement makes it, claimed, with its message.
                try:
                    return ref._ask(
                        msg, first, timeout, tags, top.with_message, top.kind, written, new
                    )
                except Occupied:
                    pass  # it exists, or the message does: find or revive it, then send
            return ref._ask(msg, first, timeout, tags, top.then_send, top.kind)
        except BaseException:
            if noted:  # nothing was written: the id may be another type's
                self.host.unnote(id)
            raise

    def _spawning(
        self,
        actor_class: type[DurableActor[Any]],
        id: str,
        state: Any,
        spec: ChildSpec | None,
        revive: bool = True,
    ) -> _TopSpawn:
        """Check a top-level spawn's arguments and say what its writes are made of."""
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        check_state(actor_class, state)
        kind = actor_class.kind()
        check_hostable_name(actor_class, kind)
        self.host.register(actor_class)
        return _TopSpawn(
            id=id,
            kind=kind,
            spec=encode(spec or ChildSpec(restart=Restart.TRANSIENT), what="child spec"),
            state=encode(state, what="state") if state is not None else None,
            start=start_message(actor_class),
            supervisor=actor_class.supervises,
            node=self.host.home_for(kind),
            revive=revive,
        )

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
        a process is up); ``timeout`` only bounds how long this call waits. An ``id`` that ran
        already is not run again: its kept outcome is returned, and a log line says so
        (``Store.forget`` lets it run anew).

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
            raise InvalidDefinitionError(
                f"{runnable!r} cannot be run: it has no start(rt, input, id=...)"
            )
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
        actor = store.actor_row(run.recipient)
        resume = getattr(self.host.resolve_class(actor.kind), "resume", None) if actor else None
        if resume is None:
            raise InvalidInputError(f"{id!r} cannot be resumed: its actor does not say how")
        return resume(self, id)

    def fork(
        self,
        run_id: str,
        *,
        at_step: int | str,
        prompt: str | None = None,
        model: Any = None,
        tools: Any = None,
        id: str | None = None,
    ) -> Any:
        """Start a new run that reuses run ``run_id``'s kept steps before ``at_step`` and goes
        on from there with a changed ``prompt``, ``model`` or ``tools``; return its handle.

        The steps before ``at_step`` (a position, 1 for the first, or a step id) are read from
        the source, not run again and not copied; the source stays as it is. The fork's id is
        ``id``, or the next free ``{run_id}~forkN``; its task says where it came from
        (``param->'fork'``), and ``promissory show`` links the two. Its actor's class decides
        how (agent runs: ``AgentRun.fork``; sub-agent calls after the cut run anew).

        Example:
            >>> fixed = rt.fork("agent/run/42", at_step=3, prompt="Cite sources.")  # doctest: +SKIP
            >>> fixed.result(timeout=600)  # doctest: +SKIP

        Raises:
            PromiseNotFoundError: no run has this id.
            InvalidInputError: ``at_step`` names no kept step of it, a change is not usable,
                or its actor does not say how to fork it.

        """
        store = self._store()
        run = store.get(run_id)
        actor = store.actor_row(run.recipient) if run.recipient else None
        fork = getattr(self.host.resolve_class(actor.kind), "fork", None) if actor else None
        if fork is None:
            raise InvalidInputError(f"{run_id!r} cannot be forked: its actor does not say how")
        return fork(self, run_id, at_step=at_step, prompt=prompt, model=model, tools=tools, id=id)

    def ref(self, id: str) -> ActorRef:
        """A ref to the actor ``id`` (which need not be hosted by this node).

        Raises:
            InvalidIdError: ``id`` is not a usable actor id.

        """
        self._store()
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        return self.host.ref(id)

    def state(self, id: str, type: Any = Any) -> Any:
        """The state snapshot kept for the actor ``id``, decoded as ``type`` (plain JSON data
        by default); ``None`` if it has kept none.

        The snapshot is the state as of the last message the actor finished handling (a
        handler's changes are kept with its reply, in one transaction); a handler running now
        has not changed it yet. It is read from the store, whichever node hosts the actor.

        Example:
            >>> rt.state("counters/main", Count)  # doctest: +SKIP
            Count(n=2)

        Raises:
            InvalidIdError: ``id`` is not a usable actor id.
            ActorNotFoundError: no actor has this id.
            DecodeError: the snapshot does not decode as ``type``.

        """
        store = self._store()
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
        actor = store.actor_row(id)
        if actor is None:
            raise ActorNotFoundError(f"no actor has the id {id!r}")
        return decode(actor.state, type)

    def stop(self, id: str) -> bool:
        """Stop an actor and everything under it, children first; pending messages are
        rejected with ``ActorStoppedError`` and watchers are told. Returns whether it was alive.
        The stop is kept before it starts, so a crash half-way is finished by recovery.

        Raises:
            InvalidIdError: ``id`` is not a usable actor id.

        """
        store = self._store()
        check_id(id, what="actor id", limit=MAX_ACTOR_ID_LENGTH)
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
        handlers running them see ``Canceled`` at their next durable operation and may clean
        up. For an actor: in one transaction its pending messages are canceled so and it is
        marked to end (``Store.cancel_actor``), then it and its children are stopped, children
        first, each after its handlers' cleanup. A crash half-way is finished by the next
        start's recovery. Returns whether anything was pending to cancel.

        Example:
            >>> rt.cancel("agent/run/42", reason="the user closed the tab")  # doctest: +SKIP
            True

        """
        store = self._store()
        with _tracing.span(f"cancel {id}", {"promissory.promise.id": id, "reason": reason}):
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

    def _schedule_kind(self, runnable: Any) -> str:
        """The run type a schedule of ``runnable`` starts, checked to be startable here."""
        kind = _type_name(runnable)
        if not callable(getattr(self.host.resolve_class(kind), "launch", None)):
            raise InvalidDefinitionError(
                f"{runnable!r} cannot be scheduled: its actor class has no launch(rt, input, id=)"
            )
        return kind

    def _start_scheduled(self, kind: str, task: Any, run_id: str) -> None:
        """A schedule's firing: start the run ``run_id`` (a no-op if it exists)."""
        self.host.resolve_class(kind).launch(self, task, id=run_id)  # type: ignore[attr-defined]

    def _remote_message(self, key: str, resync: bool) -> None:
        if resync:
            # Notifications were lost while the LISTEN connection was away: look again at
            # every mailbox this node may host, as at start (the same pass, idempotent).
            self.host.submit(self._rescan)
            return
        if not key:
            return
        # "actor<TAB>seq<TAB>holder<TAB>type": the node holding the actor takes the message;
        # for one no node holds, the node the placement picks among those hosting its type.
        actor_id, _, rest = key.partition("\t")
        seq, _, rest = rest.partition("\t")
        holder, sep, kind = rest.partition("\t")
        if sep and not self.fleet.mine(actor_id, kind, holder or None):
            return
        # A message sent in this process was handed to its activation directly, and its
        # NOTIFY is an echo the host recognises (by seq); one from elsewhere goes on at once.
        self.host.submit(self.host.nudge, actor_id, int(seq) if seq.isdigit() else None)

    def _rescan(self) -> None:
        if not self._started or self.store is None:
            return
        try:
            self._take_up([])
        except Exception as exc:  # the database is away again: the next resync looks again
            log.warning("promissory: looking at the mailboxes after a reconnect failed: %r", exc)

    def _take_up(self, adopted: list[str]) -> None:
        """The recovery pass: run every actor that is now this node's (see ``recover``)."""
        assert self.store is not None
        self.recovery = recover(self.store, self.host, self.fleet.mine, adopted)
        if adopted:
            # Trees a dead node was ending (a stop or a cancel it had kept) are ours to end.
            self._ending("", resync=True)

    def _adopted(self, node: str) -> None:
        if node != self.node_id and not self.fleet.heard_adoption(node):
            self.host.submit(self._take_up, [node])

    def _lease_lost(self, error: BaseException) -> None:
        """The lease is gone (its session ended): other nodes may adopt its actors and
        fence them off. Stop every activation here at once, then rejoin as a new node.
        """
        threading.Thread(target=self._rejoin, name="promissory-rejoin", daemon=True).start()

    def _rejoin(self) -> None:
        with self._rejoining:
            old = self.host.node_id
            self.host.fence_all()
            store = self.store
            if store is None:
                return
            attempt = 0
            while self._started:
                new = new_node_id()
                try:
                    locked = lock_connection(store.dsn, new, store.reconnect_timeout)
                    self.host.node_id = self.node_id = new
                    self.lease = NodeLease(
                        store,
                        new,
                        locked=locked,
                        kinds=self.host.hosted_kinds(),
                        on_lost=self._lease_lost,
                    )
                    break
                except Exception as exc:
                    log.warning("promissory node %s could not rejoin yet: %r", old, exc)
                    time.sleep(min(5.0, 0.2 * 2**attempt))
                    attempt += 1
            else:
                return
            log.warning("promissory node %s rejoined the fleet as %s", old, new)
            try:
                self.fleet.tick(first=True)  # its old self is dead now: adopt it at once
            except Exception as exc:
                log.warning("promissory node %s: taking up its actors failed: %r", new, exc)

    def _ending(self, actor_id: str, resync: bool) -> None:
        # An event callback: it must neither block nor fail, so the work is a thread's.
        if self.store is None:
            return
        if resync:
            self._in_thread(self._end_all_marked)
        elif actor_id:
            self._in_thread(self._end_marked, actor_id)

    def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        # Its own thread: ending a tree waits out its handlers' cleanups.
        thread = threading.Thread(target=fn, args=args, name="promissory-end", daemon=True)
        # Started before it is listed: close() joins what it lists, from another thread, and
        # joining a thread not yet started raises.
        thread.start()
        self._enders.append(thread)

    def _end_all_marked(self) -> None:
        """End every tree whose end was kept but cut off (a crash, or kept while nothing ran)."""
        store = self.store
        assert store is not None
        try:
            rows = store.ending_actors(self.node_id)
        except StoreError as exc:
            log.warning(
                "promissory: could not look for actor trees left to end (%s); the next resync "
                "or start finishes them",
                describe(exc),
            )
            return
        for record in rows:
            self._in_thread(self._end_marked, record.id)

    def _end_marked(self, actor_id: str) -> None:
        try:
            self.exits.end_marked(actor_id)
        except StoreError as exc:
            log.warning(
                "promissory: ending the tree of %s failed (%s); the next start finishes it",
                actor_id,
                describe(exc),
            )
        except Exception:
            # Kept in the store: the next start's recovery (or a resync) finishes it.
            log.exception("ending the tree of %s failed; the next start finishes it", actor_id)

    def _store(self) -> Store:
        if not self._started or self.store is None:
            raise PromissoryError("the runtime is not open (use `with Runtime() as rt:`)")
        return self.store


def _type_name(hosted: Any) -> str:
    """The type name of an item of ``Runtime(hosts=)``: a class, an agent, or a name."""
    if isinstance(hosted, str):
        return hosted
    if isinstance(hosted, type) and issubclass(hosted, DurableActor):
        return hosted.kind()
    name = getattr(hosted, "type_name", None)
    if isinstance(name, str):
        return name
    raise InvalidInputError(
        f"Runtime(hosts=...) takes actor classes, agents or type names, not {hosted!r}"
    )


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


def _protocol_server(serve: ProtocolServer | int | str | None) -> ProtocolServer | None:
    if serve is None or isinstance(serve, ProtocolServer):
        return serve
    if isinstance(serve, int) and not isinstance(serve, bool):
        return ProtocolServer(port=serve)
    if isinstance(serve, str):
        host, _, port = serve.rpartition(":")
        if port.isdigit():
            return ProtocolServer(host=host.strip("[]") or "127.0.0.1", port=int(port))
    raise InvalidInputError(f"serve must be a ProtocolServer, a port or 'host:port', not {serve!r}")
