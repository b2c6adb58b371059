"""The registry of live actors on this node, and how work reaches them.

For each actor this node hosts, a ``Slot`` says whether an activation is running (and how many
pokes it was sent), whether its head message is suspended (and on what), and which timers are
armed for it. ``deliver`` starts an activation when there is none; an idle activation is
passivated after ``idle_timeout``; a suspended one ends at once and the slot subscribes to the
promises it waits on, so a waiting actor costs a slot and a subscription, not a thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import pykka

from .. import _tracing
from .._crashpoints import reached
from ..actors import (
    STEP_ATTRIBUTE,
    Activation,
    ActorRef,
    Binding,
    DurableActor,
    Exit,
    Fresh,
    Passivate,
    Poke,
    known_types,
    registered_type,
    start_activation,
    wait_is_over,
)
from ..errors import ActorBuildError, ActorTypeNotHostedError
from ..store import (
    STORE_FAULTS,
    ActorRecord,
    ActorStatus,
    ErrorInfo,
    EventKind,
    Promise,
    Sent,
    Store,
    Subscription,
    TakenUp,
    backoff_delay,
    claim_op,
    due_restart_op,
    error_info,
    take_up_op,
)
from ._eventloop import LoopThread, Timer

log = logging.getLogger("promissory.runtime")

T = TypeVar("T")


TAKING_NONE, TAKING, TAKING_POKED = 0, 1, 2
"""A slot's take-up: none; being claimed; being claimed and a delivery came meanwhile."""

TAKE_UP_BATCH = 250
"""Actors claimed and read per transaction of a take-up: the first start while the next are
claimed, and no transaction holds many row locks for long."""


class Slot:
    """What this node knows about one actor it hosts."""

    __slots__ = (
        "kind",
        "activation",
        "ref",
        "sent",
        "suspended",
        "subscription",
        "held",
        "restart_timer",
        "stopping",
        "faults",
        "taking",
        "missed",
    )

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.activation: Activation | None = None
        self.ref: pykka.ActorRef[Any] | None = None
        self.sent = 0
        self.suspended: tuple[str, list[str], bool] | None = None
        self.subscription: Subscription | None = None
        self.restart_timer: Timer | None = None
        self.held = False
        """Deliveries wait in the mailbox: a failure is being handled, or a shutdown is on."""
        self.stopping: pykka.ActorRef[Any] | None = None
        """The activation a shutdown asked to stop, so a second shutdown waits for it too."""
        self.faults = 0
        """Activations in a row that the database failed (reset when one drains its mailbox)."""
        self.taking = TAKING_NONE
        """Whether a take-up of many actors is claiming this one (see ``NodeHost.take_up``)."""
        self.missed = False
        """A delivery came while held or suspended (the message waits in the mailbox): an
        incarnation a revive started with the mailbox it read reads it again (``restarted``)."""


class NodeHost:
    """The ``Host`` of every activation on this node (see ``promissory.actors.Host``)."""

    def __init__(
        self,
        store: Store,
        loop: LoopThread,
        node_id: str,
        *,
        suspend_after: float,
        idle_timeout: float,
        cleanup_timeout: float = 30.0,
        on_exit: Callable[[str, int, Exit, ErrorInfo | None, str | None, str | None], None],
        on_end_children: Callable[[str], None],
        hosts: frozenset[str] | None = None,
    ) -> None:
        self.store = store
        self.loop = loop
        self.node_id = node_id
        self.suspend_after = suspend_after
        self.idle_timeout = idle_timeout
        self.cleanup_timeout = cleanup_timeout
        self._on_exit = on_exit
        self.end_children = on_end_children
        self.hosts = hosts
        """The types ``Runtime(hosts=)`` names, or ``None``: every type defined here."""
        self.mine: Callable[[str, str, str | None], bool] = lambda actor_id, kind, holder: (
            holder in (None, self.node_id) and self.can_host(kind)
        )
        """Whether this node should run an actor (the fleet's placement replaces it)."""
        self.lease_held: Callable[[], bool] = lambda: True
        """Whether the node still holds its lease (the runtime replaces it)."""
        self._lock = threading.RLock()
        self._slots: dict[str, Slot] = {}
        self._handed: set[int] = set()
        """Seqs of the messages sent from this process and handed over directly (recent)."""
        self._handed_order: collections.deque[int] = collections.deque(maxlen=4096)
        self._sending: dict[str, int] = {}
        """Actors a message is being written to here, by how many sends."""
        self._echoes: dict[str, list[int | None]] = {}
        """NOTIFYs for those actors held until the sends return (see ``sent``)."""
        self._warm: dict[str, tuple[pykka.ActorRef[Any], Activation]] = {}
        """Activations started while the claiming send they are for commits (see ``warm``)."""
        self._claims: dict[str, object] = {}
        """The claiming send under way to each actor (a token per send, see ``warm``)."""
        self._warming: dict[str, object] = {}
        """The claims whose activation a worker is building now (see ``_start_claimed``)."""
        self._warmed = threading.Condition(self._lock)
        self._classes: dict[str, type[DurableActor[Any]]] = {}
        self._closing = False
        self._shut = False
        """``close`` has stopped waiting for take-ups: one that ends later starts nothing."""
        self._starting = 0
        """Take-ups and claiming sends under way. ``close`` waits for them: an actor claimed
        here is started (and then asked to stop, handling a stop its last handler asked for
        first) rather than left claimed and not run until the next start."""
        self._started = threading.Condition(self._lock)
        self._idle: dict[str, tuple[float, Activation]] = {}
        """Activations with nothing to do, by actor, in the order they became idle, with when
        each is passivated. One sweep on the event loop passivates them, not a timer per
        message: arming and canceling a timer woke the loop's thread twice per message."""
        self._sweeping = False
        """Whether a sweep of ``_idle`` is scheduled."""
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="promissory-host")
        self.parallel = ThreadPoolExecutor(max_workers=32, thread_name_prefix="promissory-step")

    def submit(self, fn: Callable[..., Any], *args: Any, attempt: int = 0) -> None:
        """Run ``fn(*args)`` on the host's worker threads (dropped once the host is closing).

        This is the node's own bookkeeping (exits, wake-ups, restarts): when the database is
        away or busy (``STORE_FAULTS``) it is run again, with backoff, until it succeeds or the
        node closes; any other failure is logged with its traceback.
        """
        try:
            self.executor.submit(self._guarded, fn, args, attempt)
        except RuntimeError:
            if not self._closing:
                raise

    def _guarded(self, fn: Callable[..., Any], args: tuple[Any, ...], attempt: int) -> None:
        try:
            fn(*args)
        except STORE_FAULTS as exc:
            if self._closing:
                return
            delay = backoff_delay(attempt, base=0.1, cap=5.0)
            log.log(
                logging.WARNING if attempt == 0 else logging.INFO,
                "promissory: %s failed because of the database (%s); retrying in %.1f s",
                getattr(fn, "__name__", fn),
                exc,
                delay,
            )
            self.loop.call_later(delay, lambda: self.submit(fn, *args, attempt=attempt + 1))
        except Exception:
            log.exception("promissory: %s failed", getattr(fn, "__name__", fn))

    # -- the Host protocol ---------------------------------------------------------------------

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an async step on the loop, blocking the actor's thread."""
        return self.loop.run(coro)

    def start_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start an async step on the loop; cancelling the future cancels its task."""
        return self.loop.submit(coro)

    def ref(self, actor_id: str) -> ActorRef:
        """A ref that delivers in-process to actors this node hosts."""
        return ActorRef(actor_id, self.store, self)

    def register(self, actor_class: type[DurableActor[Any]]) -> None:
        """Make ``actor_class`` known by its kind, for activations started here."""
        self._classes[actor_class.kind()] = actor_class

    def can_host(self, kind: str) -> bool:
        """Whether this node hosts actors of type ``kind``: its class is defined in this
        process (registered under that name) and ``Runtime(hosts=)``, if given, names it.
        """
        if self.hosts is not None and kind not in self.hosts:
            return False
        return kind in self._classes or registered_type(kind) is not None

    def hosted_kinds(self) -> list[str]:
        """The types this node hosts, by name."""
        if self.hosts is not None:
            return sorted(k for k in self.hosts if self.can_host(k))
        return sorted(set(known_types()) | set(self._classes))

    def home_for(self, kind: str) -> str | None:
        """The id of this node if it hosts ``kind`` (an actor it makes or restarts stays here),
        else ``None`` (the placement gives it to a node that does).
        """
        return self.node_id if self.can_host(kind) else None

    def resolve_class(self, kind: str) -> type[DurableActor[Any]]:
        """The class of ``kind``, as registered in this process (nothing is imported).

        Raises:
            ActorTypeNotHostedError: this node does not host that type.

        """
        found = self._classes.get(kind) or registered_type(kind)
        if (found is None or not self.can_host(kind)) and kind.startswith("agent:"):
            raise ActorTypeNotHostedError(
                f"no agent named {kind.removeprefix('agent:')!r} is defined in this process "
                "(or Runtime(hosts=...) leaves it out): import the module that defines it"
            )
        if found is None or not self.can_host(kind):
            raise ActorTypeNotHostedError(
                f"this node does not host actors of type {kind!r} (its class is not defined "
                "in this process, or Runtime(hosts=...) leaves it out)"
            )
        return found

    def sending(self, actor_id: str, claim: bool = False) -> str | None:
        """A message to ``actor_id`` is being written in this process: a NOTIFY for it that
        comes before the send returns waits for ``sent``, which tells whether it was ours.

        With ``claim``, returns this node's id when the send may claim the actor
        (``send_op(claim=)``): this node holds it and no activation of it runs or is being
        started (it was passivated, or spawned and not started). Until ``sent``, deliveries
        to it wait as during a take-up, so the activation the claim is for is the only one.
        """
        with self._lock:
            self._sending[actor_id] = self._sending.get(actor_id, 0) + 1
            if not claim or not self._claimable(actor_id):
                return None
        # Asked only for a send that may claim (the lease check may ask the database).
        if not self.lease_held():
            return None
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or not self._claimable(actor_id):
                return None
            slot.taking = TAKING
            self._claims[actor_id] = object()
            self._starting += 1  # until ``_start_claimed``
            return self.node_id

    def _claimable(self, actor_id: str) -> bool:
        """Whether a send may claim the actor here (see ``sending``; under the lock)."""
        slot = self._slots.get(actor_id)
        if self._closing or slot is None or slot.kind is None or slot.ref is not None:
            return False
        if slot.suspended is not None or slot.held or slot.taking != TAKING_NONE:
            return False
        return slot.stopping is None and self.can_host(slot.kind)

    def sent(self, actor_id: str, sent: Sent | None, mark: int, claim: str | None = None) -> None:
        """Hand a message this process has just written to the actor's activation here, with
        what its send told (the recipient's placement and epoch): no read on the way. Then
        deliver the NOTIFYs that came meanwhile and were not of it. ``claim``: what
        ``sending`` returned for this send.
        """
        handed = claim is not None and self._start_claimed(actor_id, sent, mark)
        if not handed and sent is not None and sent.applied:
            fresh = None
            if sent.epoch is not None:
                fresh = Fresh(sent.epoch, sent.earlier, mark)
            placed = (sent.kind, sent.node) if sent.kind is not None else None
            self.deliver(actor_id, sent.promise, fresh, placed)
        with self._lock:
            left = self._sending.get(actor_id, 1) - 1
            if left > 0:
                self._sending[actor_id] = left
                return
            self._sending.pop(actor_id, None)
            echoes = self._echoes.pop(actor_id, ())
            others = [seq for seq in echoes if seq is None or seq not in self._handed]
        if others:
            self.deliver(actor_id, None)

    def warm(self, actor_id: str) -> None:
        """Start the activation of ``actor_id`` that a claiming send is for (``sending`` gave
        the claim) while that send commits: the store's writer calls this once the send's
        COMMIT is on its way, and a worker thread starts the activation while the database
        works, so the thread's start is not paid after the commit. The activation waits,
        unclaimed, for ``sent``: it hands it the message from the claimed row, or stops it
        when the claim did not hold. One whose building has not begun by then is not built:
        ``sent`` starts the activation itself; one being built is waited for, so that the
        actor's ``on_start`` and ``on_stop`` run for one activation, not for a spare as well.
        """
        claim = self._claims.get(actor_id)
        if claim is None:
            return  # the send has returned already
        try:
            self.executor.submit(self._warm_up, actor_id, claim)
        except RuntimeError:
            pass  # closing

    def _warm_up(self, actor_id: str, claim: object) -> None:
        with self._lock:
            slot = self._slots.get(actor_id)
            kind = slot.kind if slot is not None else None
            if kind is None or self._closing or self._claims.get(actor_id) is not claim:
                return  # the send has returned already
            self._warming[actor_id] = claim
        started = None
        try:
            started = start_activation(self.resolve_class(kind), Binding(actor_id, self, None))
        except Exception as exc:  # built again when the send returns, its failure reported then
            log.debug("actor %s: no activation started ahead of its claim: %r", actor_id, exc)
        finally:
            with self._lock:
                if self._warming.get(actor_id) is claim:
                    del self._warming[actor_id]
                if (
                    started is not None
                    and not self._closing
                    and self._claims.get(actor_id) is claim
                    and actor_id not in self._warm
                ):
                    self._warm[actor_id] = started
                    started = None
                self._warmed.notify_all()
        if started is not None:
            started[1].request_stop()  # the send returned already (it gave up waiting): unused

    def _start_claimed(self, actor_id: str, sent: Sent | None, mark: int) -> bool:
        """End the wait ``sending(claim=True)`` began; when the send claimed the actor, start
        its activation from the claimed row with the message (no write, no read) and return
        ``True``. Otherwise deliveries go on as usual (the message by the caller).
        """
        claimed = sent.claimed if sent is not None and sent.applied else None
        with self._lock:
            # The activation a worker is building for this claim is waited for, not built a
            # second time: the actor's ``on_start`` and ``on_stop`` run once, for the one used.
            claim = self._claims.get(actor_id)
            while claim is not None and self._warming.get(actor_id) is claim:
                self._warmed.wait()
            self._start_ended()  # the claim's; nothing here lets ``close`` in before the end
            self._claims.pop(actor_id, None)
            spare = self._warm.pop(actor_id, None)
            try:
                slot = self._slots.get(actor_id)
                if slot is None or slot.taking == TAKING_NONE:
                    return False
                poked = slot.taking == TAKING_POKED
                slot.taking = TAKING_NONE
                if claimed is None or sent is None or self._shut:
                    if poked:
                        # What came meanwhile, now and in this thread, as it would have come:
                        # not on the host's workers, which drop work once the node is closing.
                        self.deliver(actor_id, None)
                    return False  # not claimed: a delivery starts an activation of its own
                self._handing(sent.promise.seq)
                if spare is not None and slot.ref is None:
                    slot.ref, slot.activation = spare
                    slot.sent = 0
                    spare = None
                fresh = Fresh(claimed.epoch, sent.earlier, mark)
                # Its mailbox is this message alone when nothing pending came before it.
                taken = TakenUp(claimed, [], sent.earlier == (), {}, {})
                self._poke_or_fail(actor_id, slot, Poke(sent.promise, fresh, taken))
                if poked:
                    self._poke_or_fail(actor_id, slot, Poke())  # a delivery came meanwhile
                return True
            finally:
                if spare is not None:
                    spare[1].request_stop()  # started for this claim and not used

    def _handing(self, seq: int) -> None:
        """Note a message handed over in this process: its NOTIFY, when it comes, is an echo."""
        if len(self._handed_order) == self._handed_order.maxlen:
            self._handed.discard(self._handed_order[0])
        self._handed_order.append(seq)
        self._handed.add(seq)

    def deliver(
        self,
        actor_id: str,
        message: Promise | None,
        fresh: Fresh | None = None,
        placed: tuple[str, str | None] | None = None,
    ) -> None:
        """Hand a committed message (or a nudge to look) to the actor's activation here.

        ``fresh`` and ``placed`` are what the message's send told (``sent``).
        """
        with self._lock:
            if self._closing:
                return
            if message is not None:
                self._handing(message.seq)
            slot = self._slots.get(actor_id)
            if slot is None:
                slot = self._slots[actor_id] = Slot(None)
            if slot.taking != TAKING_NONE:
                slot.taking = TAKING_POKED  # looked at once the take-up has started it
                return
            if slot.suspended is not None or slot.held:
                slot.missed = True
                return  # the message waits in the durable mailbox
            if slot.kind is None:
                if placed is None:
                    placed = self.store.placement(actor_id)
                if placed is None or not self.mine(actor_id, placed[0], placed[1]):
                    # Gone, or another node's (it hears of the message by NOTIFY), or of a
                    # type this node does not host: not ours to run.
                    del self._slots[actor_id]
                    return
                slot.kind = placed[0]
            self._poke_or_fail(actor_id, slot, Poke(message, fresh))

    def _poke_or_fail(self, actor_id: str, slot: Slot, poke: Poke | None) -> None:
        """Poke the actor's activation (started if need be); a class that cannot be built
        here is a crash for supervision, and one not hosted here is left to another node.
        """
        try:
            self._poke(actor_id, slot, poke)
        except ActorBuildError as exc:
            # The class raised while built: a crash like a handler's, for supervision.
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            log.warning("actor %s could not be built: %r", actor_id, cause)
            slot.held = True
            slot.activation = slot.ref = None
            self.submit(self._build_failed, actor_id, cause)
        except ActorTypeNotHostedError:
            # The message is committed; a node that hosts the type takes the actor up.
            log.debug("not hosting %s here (%s)", actor_id, slot.kind)
            self._slots.pop(actor_id, None)

    def _build_failed(self, actor_id: str, error: Exception) -> None:
        """Report an actor whose class raised in ``__init__`` as crashed: claim it (so the
        exit is this node's to report, at an epoch of its own), then hand it to supervision.
        """
        record: ActorRecord | None = self.store.execute(claim_op(actor_id, self.node_id))
        if record is None:
            # Not alive any more, or another node holds it: nothing of ours to report.
            self.forget(actor_id)
            return
        self._handle_exit(actor_id, record.epoch, Exit.ABNORMAL, error_info(error), None)

    def nudge(self, actor_id: str, seq: int | None) -> None:
        """A message for ``actor_id`` was committed somewhere (NOTIFY): deliver it unless the
        activation here has it already (our own messages come back this way too).
        """
        with self._lock:
            if seq is not None and seq in self._handed:
                return  # sent from this process: handed to its activation directly
            if actor_id in self._sending:
                # Maybe of a send still returning here: decided when it has (``sent``).
                self._echoes.setdefault(actor_id, []).append(seq)
                return
            slot = self._slots.get(actor_id)
            activation = slot.activation if slot is not None else None
            if activation is not None and seq is not None and seq in activation.seen:
                return
        self.deliver(actor_id, None)

    def take_up(self, actor_ids: Sequence[str]) -> None:
        """Start activations for ``actor_ids`` (in that order) with one claim and one read
        for each ``TAKE_UP_BATCH`` of them (``take_up_op``), as the recovery pass does for
        the actors it finds with work; each starts its first message with no read of its own.
        Actors already active here, waiting, or held are delivered to as one by one.
        """
        for start in range(0, len(actor_ids), TAKE_UP_BATCH):
            self._take_up(actor_ids[start : start + TAKE_UP_BATCH])

    def _take_up(self, actor_ids: Sequence[str]) -> None:
        chosen: list[str] = []
        with self._lock:
            if self._closing:
                return
            for actor_id in actor_ids:
                slot = self._slots.get(actor_id)
                if slot is None or slot.kind is None or slot.ref is not None:
                    continue
                if slot.suspended is not None or slot.held or slot.taking != TAKING_NONE:
                    continue
                slot.taking = TAKING
                chosen.append(actor_id)
            if chosen:
                self._starting += 1
        try:
            self._take_up_chosen(actor_ids, chosen)
        finally:
            if chosen:
                with self._lock:
                    self._start_ended()

    def _start_ended(self) -> None:
        """A take-up or claiming send has started what it claimed (under the lock)."""
        self._starting -= 1
        self._started.notify_all()

    def _take_up_chosen(self, actor_ids: Sequence[str], chosen: list[str]) -> None:
        taken: dict[str, TakenUp] = {}
        try:
            if chosen:
                taken = self.store.execute(take_up_op(chosen, self.node_id))
                reached("actors.taken_up", chosen[0])
        except Exception as exc:
            # One by one then: each activation claims and reads for itself.
            log.info("taking %d actors up at once failed (%r); one by one", len(chosen), exc)
            chosen, failed = [], chosen
            with self._lock:
                for actor_id in failed:
                    slot = self._slots.get(actor_id)
                    if slot is not None:
                        slot.taking = TAKING_NONE
            for actor_id in failed:
                self.deliver(actor_id, None)
        picked = set(chosen)
        later: list[str] = []
        started: list[tuple[str, Slot, TakenUp, bool]] = []
        with self._lock:  # one hold: no delivery or second take-up comes between
            for actor_id in actor_ids:
                slot = self._slots.get(actor_id)
                if actor_id not in picked or slot is None:
                    later.append(actor_id)
                    continue
                poked = slot.taking == TAKING_POKED
                slot.taking = TAKING_NONE
                up = taken.get(actor_id)
                if up is None or self._shut:
                    # Not claimed: not alive any more, another node holds it, or a restart
                    # its supervisor decided comes first (that revive activates it).
                    if poked:
                        later.append(actor_id)  # what came meanwhile, as it would have
                    elif slot.ref is None:
                        del self._slots[actor_id]
                    continue
                # Every thread first, then the pokes: a thread starts faster while the ones
                # started before it are not yet at work.
                self._poke_or_fail(actor_id, slot, None)
                if slot.ref is not None:
                    started.append((actor_id, slot, up, poked))
            for actor_id, slot, up, poked in started:
                self._poke_or_fail(actor_id, slot, Poke(None, None, up))
                if poked:
                    self._poke_or_fail(actor_id, slot, Poke())  # a delivery came meanwhile
        for actor_id in later:
            self.deliver(actor_id, None)

    def _poke(self, actor_id: str, slot: Slot, poke: Poke | None) -> None:
        """Poke the actor's activation, started if need be (``None``: only start it)."""
        self._idle.pop(actor_id, None)
        if slot.ref is None or slot.activation is None:
            self._start(actor_id, slot, poke)
            return
        if poke is None:
            return
        slot.sent += 1
        assert slot.ref is not None
        try:
            slot.ref.tell(poke)
        except pykka.ActorDeadError:
            slot.ref = slot.activation = None
            self._start(actor_id, slot, poke)

    def _start(self, actor_id: str, slot: Slot, first: Poke | None = None) -> None:
        """Start an activation, with ``first`` in its inbox before its thread starts."""
        assert slot.kind is not None
        actor_class = self.resolve_class(slot.kind)  # raises if this process cannot host it
        slot.sent = 0 if first is None else 1
        binding = Binding(actor_id, self, first)
        slot.ref, slot.activation = start_activation(actor_class, binding)

    def note_kind(self, actor_id: str, kind: str) -> bool:
        """Remember an actor's kind (from a spawn or the recovery pass) to save a lookup;
        ``True`` when this node knew nothing of the actor before.
        """
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                self._slots[actor_id] = Slot(kind)
                return True
            if slot.kind is None:
                slot.kind = kind
            return False

    def unnote(self, actor_id: str) -> None:
        """Forget an actor ``note_kind`` noted for a spawn that then failed (the id may be
        another type's), unless something has been started for it meanwhile.
        """
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.ref is not None or slot.taking != TAKING_NONE:
                return
            if slot.held or slot.suspended is not None:
                return
            del self._slots[actor_id]

    def activation_idle(self, activation: Activation) -> None:
        """Passivate the activation after ``idle_timeout`` unless work arrives first."""
        with self._lock:
            slot = self._slots.get(activation.actor_id)
            if slot is None or slot.activation is not activation:
                return
            slot.faults = 0
            actor_id = activation.actor_id
            self._idle.pop(actor_id, None)  # to the end: the dict stays in deadline order
            self._idle[actor_id] = (time.monotonic() + self.idle_timeout, activation)
            if self._sweeping:
                return
            self._sweeping = True
        self.loop.call_later(self.idle_timeout, self._sweep)

    def _sweep(self) -> None:
        """Passivate every activation idle for ``idle_timeout``; come back for the next."""
        now = time.monotonic()
        due: list[tuple[str, Activation]] = []
        with self._lock:
            while self._idle:
                actor_id, (at, activation) = next(iter(self._idle.items()))
                if at > now:
                    break
                del self._idle[actor_id]
                due.append((actor_id, activation))
            later = next(iter(self._idle.values()))[0] - now if self._idle else None
            self._sweeping = later is not None
        for actor_id, activation in due:
            self._passivate(actor_id, activation)
        if later is not None:
            self.loop.call_later(later, self._sweep)

    def _passivate(self, actor_id: str, activation: Activation) -> None:
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.activation is not activation:
                return
            if slot.sent != activation.pokes:
                return  # a poke is on its way
            ref = slot.ref
            slot.activation = slot.ref = None
        if ref is not None:
            try:
                ref.tell(Passivate())
            except pykka.ActorDeadError:
                pass

    def activation_suspended(
        self, activation: Activation, message_id: str, awaiting: list[str], wait_all: bool
    ) -> None:
        """The head message waits: drop the activation and wake when what it waits on settles."""
        actor_id = activation.actor_id
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                return
            if slot.activation is activation:
                slot.activation = slot.ref = None
            slot.suspended = (message_id, list(awaiting), wait_all)
            if slot.subscription is not None:
                slot.subscription.cancel()
            slot.subscription = self.store.subscribe(
                EventKind.SETTLED,
                [*awaiting, message_id],
                lambda kind, key, resync: self.wake_soon(actor_id),
            )
        # Something may have settled between the suspension's own check and the subscription.
        self.wake_soon(actor_id)

    def register_suspended(
        self, actor_id: str, kind: str, message_id: str, awaiting: list[str], wait_all: bool
    ) -> None:
        """Recovery: an actor whose head message was suspended when the last process ended."""
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                slot = self._slots[actor_id] = Slot(kind)
            if slot.activation is not None:
                return  # live here: it handles its own suspension (a rescan found it)
            slot.suspended = (message_id, list(awaiting), wait_all)
            if slot.subscription is not None:
                slot.subscription.cancel()
            slot.subscription = self.store.subscribe(
                EventKind.SETTLED,
                [*awaiting, message_id],
                lambda k, key, r: self.wake_soon(actor_id),
            )

    def wake_soon(self, actor_id: str) -> None:
        """Check soon whether a suspended actor can go on (off the calling thread)."""
        # Subscription callbacks run on the store's threads and must not block.
        self.submit(self._wake, actor_id)

    def _wake(self, actor_id: str) -> None:
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.suspended is None:
                return
            message_id, awaiting, wait_all = slot.suspended
        found = self.store.get_many([*awaiting, message_id])
        message = found.pop(message_id, None)
        if message is None or message.state.settled:
            awaiting = []  # canceled or timed out: replay it to clean up
        states = {id: p.state for id, p in found.items()}
        if not wait_is_over(awaiting, states, wait_all):
            return
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.suspended is None:
                return
            slot.suspended = None
            if slot.subscription is not None:
                slot.subscription.cancel()
                slot.subscription = None
        self.deliver(actor_id, None)

    def activation_faulted(self, activation: Activation, error: BaseException) -> None:
        """The database failed an activation's work: try its mailbox again later."""
        actor_id = activation.actor_id
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.activation is not activation:
                return
            slot.activation = slot.ref = None
            slot.faults += 1
            faults = slot.faults
        delay = backoff_delay(faults - 1, base=0.2, cap=5.0)
        log.log(
            logging.WARNING if faults == 1 else logging.INFO,
            "actor %s: the database failed its work (%s); its messages stay pending and are "
            "taken up again in %.1f s",
            actor_id,
            error,
            delay,
        )
        self.loop.call_later(delay, self.submit, self.deliver, actor_id, None)

    def activation_ended(self, activation: Activation) -> None:
        """An activation stopped: forget it, and start another if pokes were left unread."""
        actor_id = activation.actor_id
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.activation is not activation:
                return
            lost = slot.sent != activation.pokes
            slot.activation = slot.ref = None
        if lost and activation.record is not None:
            self.deliver(actor_id, None)

    def actor_crashed(
        self, activation: Activation, message: Promise | None, error: BaseException
    ) -> None:
        """A handler raised: hand the failure to supervision (off the actor's thread)."""
        step = getattr(error, STEP_ATTRIBUTE, None)
        self._exited(activation, Exit.ABNORMAL, error_info(error), step)

    def actor_exited(self, activation: Activation, exit: Exit, error: ErrorInfo | None) -> None:
        """A handler ended its actor (``ctx.stop``): hand the exit to supervision."""
        self._exited(activation, exit, error)

    def _exited(
        self,
        activation: Activation,
        exit: Exit,
        error: ErrorInfo | None,
        step: str | None = None,
    ) -> None:
        actor_id = activation.actor_id
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is not None and slot.activation is activation:
                slot.activation = slot.ref = None
            if slot is not None:
                slot.held = True
        epoch = activation.fence.epoch if activation.fence is not None else -1
        parent = activation.record.parent if activation.record is not None else None
        self.submit(self._handle_exit, actor_id, epoch, exit, error, step, parent)

    def _handle_exit(
        self,
        actor_id: str,
        epoch: int,
        exit: Exit,
        error: ErrorInfo | None,
        step: str | None,
        parent: str | None = None,
    ) -> None:
        try:
            self._on_exit(actor_id, epoch, exit, error, step, parent)
        except STORE_FAULTS:
            raise  # the database's trouble, not the actor's: ``submit`` runs it again
        except Exception:
            log.exception("promissory: supervision failed for actor %s", actor_id)
            self.release(actor_id)

    def release(self, actor_id: str) -> None:
        """Let deliveries through again (after a failure was handled) and look at the mailbox."""
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                return
            slot.held = False
        self.deliver(actor_id, None)

    def spawned(self, actor_id: str, kind: str) -> None:
        """An actor was created (from a handler or the API): remember its kind, and deliver."""
        self.note_kind(actor_id, kind)

    def restarted(self, revived: ActorRecord | TakenUp) -> None:
        """An actor's next incarnation was recorded: activate it now, or at its restart time.

        ``revived`` is its row as the revive left it, or (``revive_op(take=True)``) the row
        with what its activation needs first, read in the revive's transaction.
        """
        taken = revived if isinstance(revived, TakenUp) else TakenUp.unread(revived)
        record = taken.record
        _tracing.restarted(self.store, record)
        with self._lock:
            slot = self._slots.get(record.id)
            if slot is None:
                slot = self._slots[record.id] = Slot(record.kind)
            slot.kind = record.kind
            slot.held = False
            slot.suspended = None
            missed, slot.missed = slot.missed, False
            if slot.subscription is not None:
                slot.subscription.cancel()
                slot.subscription = None
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
            if record.status is ActorStatus.RESTARTING and record.restart_at is not None:
                delay = max(0.0, (record.restart_at - datetime.now(UTC)).total_seconds())
                slot.restart_timer = self.loop.call_later(
                    delay + 0.002, self._restart_due, record.id
                )
                return
            if (
                record.node == self.node_id
                and record.status is ActorStatus.RUNNING
                and slot.ref is None
                and slot.taking == TAKING_NONE
                and not self._closing
            ):
                # The revive made the new incarnation, at its epoch, on this node: that row is
                # its claim, and the activation starts from it with no write of its own (and
                # no read either when the revive read its mailbox). One another claim has
                # overtaken since is fenced off; a message committed after the revive's read
                # and delivered from now on is handed to it as to any running actor.
                if missed:
                    # A message delivered while it was held may have come after the revive's
                    # read: the activation reads its mailbox itself.
                    taken = TakenUp.unread(record)
                self._poke_or_fail(record.id, slot, Poke(None, None, taken))
                return
        self.deliver(record.id, None)

    def _restart_due(self, actor_id: str) -> None:
        self.submit(self._restart_now, actor_id)

    def _restart_now(self, actor_id: str) -> None:
        record = self.store.execute(due_restart_op(actor_id))
        if record is None:
            # Not due yet by the database's clock (or no longer restarting): look again.
            due_in = self.store.restart_due_in(actor_id)
            if due_in is not None:
                with self._lock:
                    slot = self._slots.get(actor_id)
                    if slot is not None:
                        slot.restart_timer = self.loop.call_later(
                            max(0.0, due_in) + 0.005, self._restart_due, actor_id
                        )
            return
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is not None:
                slot.restart_timer = None
        self.deliver(actor_id, None)

    def shutdown_activation(self, actor_id: str, timeout: float | None) -> None:
        """Let the activation here finish its current message (for at most ``timeout`` s)."""
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                return
            slot.held = True
            activation, ref = slot.activation, slot.ref
            slot.activation = slot.ref = None
            self._idle.pop(actor_id, None)
            if ref is not None:
                slot.stopping = ref
            else:
                # Another shutdown of this actor is under way (a tree ended twice at once):
                # wait for the same activation rather than end the actor under it.
                ref = slot.stopping
        if ref is None:
            return
        if activation is not None:
            activation.request_stop()
        if timeout is None:
            ref.actor_stopped.wait()
        elif not ref.actor_stopped.wait(timeout) and activation is not None:
            # Python cannot kill the handler; it is fenced instead: the caller claims a new
            # epoch, and from now on the handler's next durable operation raises FencedError.
            activation.superseded.set()
            if timeout > 0:
                log.warning(
                    "actor %s did not finish its message within its shutdown time (%.1f s): "
                    "its handler runs on, fenced off (nothing more it does is kept)",
                    actor_id,
                    timeout,
                )

    def finish_cleanups(
        self, actor_id: str, timeout: float | None, pending: bool | None = None
    ) -> None:
        """Let ``actor_id`` replay its canceled messages to clean up (for at most ``timeout``
        s, or ``cleanup_timeout`` for none) before it is ended: a tree ending because it was
        canceled must not cut off the cleanups of the actors in it. ``pending``: whether one
        is marked, as just read (``None``: it is read here).
        """
        limit = self.cleanup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = 0.005
        if pending is None:
            pending = self.store.cleanup_pending(actor_id)
        while pending:
            if time.monotonic() >= deadline:
                log.warning("actor %s did not finish its cleanup in %.1f s", actor_id, limit)
                return
            self._wake(actor_id)  # a suspended handler waits no more: its message ended
            self.deliver(actor_id, None)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)
            pending = self.store.cleanup_pending(actor_id)

    def forget(self, actor_id: str) -> None:
        """Drop an actor that stopped or failed; its activation, if any, is told to end."""
        with self._lock:
            slot = self._slots.pop(actor_id, None)
        if slot is None:
            return
        if slot.subscription is not None:
            slot.subscription.cancel()
        if slot.restart_timer is not None:
            slot.restart_timer.cancel()
        if slot.ref is not None:
            try:
                slot.ref.tell(Passivate())
            except pykka.ActorDeadError:
                pass

    def fence_all(self) -> None:
        """The node lost its lease: fence off every activation here (each one's next durable
        operation raises ``FencedError``), ask it to stop, and forget every slot; the node
        takes up its actors again as a new node, or another node does.
        """
        with self._lock:
            slots, self._slots = self._slots, {}
            self._idle.clear()
            self._stop_spares()
        for slot in slots.values():
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
            if slot.subscription is not None:
                slot.subscription.cancel()
            if slot.activation is not None:
                slot.activation.superseded.set()
                slot.activation.request_stop()

    def _stop_spares(self) -> None:
        """Stop the activations started for claiming sends still committing (under the lock):
        the node is closing or fenced off, and none of them will be used.
        """
        spares, self._warm = list(self._warm.values()), {}
        self._claims.clear()
        for _, spare in spares:
            spare.request_stop()

    # -- lifecycle -----------------------------------------------------------------------------

    def live_activations(self) -> int:
        """How many activations (threads) are running now."""
        return len(self.live_ids())

    def live_ids(self) -> list[str]:
        """The actors whose activations are running now, by id."""
        with self._lock:
            return sorted(a for a, s in self._slots.items() if s.activation is not None)

    def suspended_count(self) -> int:
        """How many actors wait with no activation."""
        with self._lock:
            return sum(1 for s in self._slots.values() if s.suspended is not None)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking work, ask every activation to end after its current message, and wait.

        A take-up or claiming send under way finishes first, and what it claimed is started
        and stopped with the rest: an actor whose last handler stopped it is ended, not left
        claimed and running until the next start.
        """
        # One deadline for them all: a node of many busy actors closes within ``timeout``.
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closing = True
            # What a take-up or claiming send claimed is started first, to be stopped below
            # (half the time at most: the handlers' share is the rest).
            starts = time.monotonic() + timeout / 2
            while self._starting and (left := starts - time.monotonic()) > 0:
                self._started.wait(left)
            self._shut = True
            running = [
                (actor_id, s.ref, s.activation)
                for actor_id, s in self._slots.items()
                if s.ref is not None
            ]
            for slot in self._slots.values():
                if slot.subscription is not None:
                    slot.subscription.cancel()
            self._idle.clear()
            self._stop_spares()
        for _, ref, activation in running:
            if activation is not None:
                activation.request_stop()
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)
        late = []
        for actor_id, ref, activation in running:
            if not ref.actor_stopped.wait(max(0.0, deadline - time.monotonic())):
                late.append(actor_id)
                if activation is not None:
                    activation.superseded.set()  # its next durable operation is refused
        if late:
            log.warning(
                "%d actor(s) did not finish their message within the shutdown time (%.1f s): "
                "their handlers run on, fenced off (nothing more they do is kept): %s",
                len(late),
                timeout,
                ", ".join(late[:10]) + (" …" if len(late) > 10 else ""),
            )
        # Bookkeeping already queued (an exit, a wake-up) finishes: a drained node leaves the
        # store as it stands, not with an actor that ended but is still marked running.
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.parallel.shutdown(wait=False, cancel_futures=True)
