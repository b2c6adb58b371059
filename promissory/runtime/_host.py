"""The registry of live actors on this node, and how work reaches them.

For each actor this node hosts, a ``Slot`` says whether an activation is running (and how many
pokes it was sent), whether its head message is suspended (and on what), and which timers are
armed for it. ``deliver`` starts an activation when there is none; an idle activation is
passivated after ``idle_timeout``; a suspended one ends at once and the slot subscribes to the
promises it waits on, so a waiting actor costs a slot and a subscription, not a thread.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import pykka

from ..actors import ActorRef, DurableActor, Exit
from ..actors._activation import Activation, Binding, Passivate, Poke
from ..actors._actor import start_activation
from ..actors._steps import STEP_ATTRIBUTE
from ..store import ErrorInfo, Promise, Store, Subscription, error_info
from ..store._actors import ActorRecord, ActorStatus, due_restart_op
from ..store._steps import MARKED
from ._loop import LoopThread, Timer

log = logging.getLogger("promissory.runtime")

T = TypeVar("T")


class Slot:
    """What this node knows about one actor it hosts."""

    __slots__ = (
        "kind",
        "activation",
        "ref",
        "sent",
        "suspended",
        "subscription",
        "idle_timer",
        "held",
        "restart_timer",
        "stopping",
    )

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.activation: Activation | None = None
        self.ref: pykka.ActorRef[Any] | None = None
        self.sent = 0
        self.suspended: tuple[str, list[str], bool] | None = None
        self.subscription: Subscription | None = None
        self.idle_timer: Timer | None = None
        self.restart_timer: Timer | None = None
        self.held = False
        """Deliveries wait in the mailbox: a failure is being handled, or a shutdown is on."""
        self.stopping: pykka.ActorRef[Any] | None = None
        """The activation a shutdown asked to stop, so a second shutdown waits for it too."""


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
        on_exit: Callable[[str, int, Exit, ErrorInfo | None, str | None], None],
    ) -> None:
        self.store = store
        self.loop = loop
        self.node_id = node_id
        self.suspend_after = suspend_after
        self.idle_timeout = idle_timeout
        self.cleanup_timeout = cleanup_timeout
        self._on_exit = on_exit
        self._lock = threading.RLock()
        self._slots: dict[str, Slot] = {}
        self._classes: dict[str, type[DurableActor[Any]]] = {}
        self._closing = False
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="promissory-host")
        self.parallel = ThreadPoolExecutor(max_workers=32, thread_name_prefix="promissory-step")

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the host's worker threads (dropped once the host is closing)."""
        try:
            self.executor.submit(fn, *args)
        except RuntimeError:
            if not self._closing:
                raise

    # -- the Host protocol ---------------------------------------------------------------------

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run an async step on the loop, blocking the actor's thread."""
        return self.loop.run(coro)

    def start_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start an async step on the loop; cancelling the future cancels its task."""
        return self.loop.submit(coro)

    def ref(self, actor_id: str) -> ActorRef:
        """A ref that delivers in-process to actors this node hosts."""
        return ActorRef(actor_id, self.store, self.deliver)

    def register(self, actor_class: type[DurableActor[Any]]) -> None:
        """Make ``actor_class`` known by its kind, for activations started here."""
        self._classes[actor_class.kind()] = actor_class

    def resolve_class(self, kind: str) -> type[DurableActor[Any]]:
        """The class of ``kind`` (``module:QualName``), registered or imported."""
        found = self._classes.get(kind)
        if found is not None:
            return found
        module_name, _, qualname = kind.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not (isinstance(obj, type) and issubclass(obj, DurableActor)):
            raise TypeError(f"{kind} is not a DurableActor class")
        self._classes[kind] = obj
        return obj

    def deliver(self, actor_id: str, message: Promise | None) -> None:
        """Hand a committed message (or a nudge to look) to the actor's activation here."""
        with self._lock:
            if self._closing:
                return
            slot = self._slots.get(actor_id)
            if slot is None:
                slot = self._slots[actor_id] = Slot(None)
            if slot.suspended is not None or slot.held:
                return  # the message waits in the durable mailbox
            if slot.kind is None:
                kind = self._kind_of(actor_id)
                if kind is None:
                    del self._slots[actor_id]
                    return
                slot.kind = kind
            try:
                self._poke(actor_id, slot, message)
            except (ImportError, AttributeError, TypeError) as exc:
                # This process cannot import the actor's class: it does not host it. The
                # message is committed; a node that can host it hears of it by NOTIFY.
                log.info("not hosting %s here (%s): %s", actor_id, slot.kind, exc)
                del self._slots[actor_id]

    def nudge(self, actor_id: str, seq: int | None) -> None:
        """A message for ``actor_id`` was committed somewhere (NOTIFY): deliver it unless the
        activation here has it already (our own messages come back this way too).
        """
        with self._lock:
            slot = self._slots.get(actor_id)
            activation = slot.activation if slot is not None else None
            if activation is not None and seq is not None and seq in activation.seen:
                return
        self.deliver(actor_id, None)

    def _poke(self, actor_id: str, slot: Slot, message: Promise | None) -> None:
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
            slot.idle_timer = None
        if slot.ref is None or slot.activation is None:
            self._start(actor_id, slot)
        slot.sent += 1
        assert slot.ref is not None
        try:
            slot.ref.tell(Poke(message))
        except pykka.ActorDeadError:
            slot.ref = slot.activation = None
            self._start(actor_id, slot)
            slot.sent = 1
            assert slot.ref is not None
            slot.ref.tell(Poke(message))

    def _start(self, actor_id: str, slot: Slot) -> None:
        assert slot.kind is not None
        actor_class = self.resolve_class(slot.kind)  # raises if this process cannot host it
        slot.sent = 0
        slot.ref, slot.activation = start_activation(actor_class, Binding(actor_id, self))

    def _kind_of(self, actor_id: str) -> str | None:
        row = self.store.read(
            lambda conn: conn.execute(
                "SELECT kind FROM actors WHERE id = %s AND status IN ('running', 'restarting')",
                (actor_id,),
            ).fetchone()
        )
        return str(row[0]) if row else None

    def note_kind(self, actor_id: str, kind: str) -> None:
        """Remember an actor's kind (from a spawn or the recovery pass) to save a lookup."""
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                self._slots[actor_id] = Slot(kind)
            elif slot.kind is None:
                slot.kind = kind

    def activation_idle(self, activation: Activation) -> None:
        """Passivate the activation after ``idle_timeout`` unless work arrives first."""
        with self._lock:
            slot = self._slots.get(activation.actor_id)
            if slot is None or slot.activation is not activation:
                return
            if slot.idle_timer is not None:
                slot.idle_timer.cancel()
            slot.idle_timer = self.loop.call_later(
                self.idle_timeout, self._passivate, activation.actor_id, activation
            )

    def _passivate(self, actor_id: str, activation: Activation) -> None:
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None or slot.activation is not activation:
                return
            if slot.sent != activation.pokes:
                return  # a poke is on its way
            ref = slot.ref
            slot.activation = slot.ref = None
            slot.idle_timer = None
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
                "settled",
                [*awaiting, message_id],
                lambda kind, key, resync: self.wake_soon(actor_id),
            )
        # Something may have settled between the suspension's own check and the subscription.
        self.wake_soon(actor_id)

    def register_suspended(
        self, actor_id: str, kind: str, message_id: str, awaiting: list[str]
    ) -> None:
        """Recovery: an actor whose head message was suspended when the last process ended."""
        with self._lock:
            slot = self._slots.get(actor_id)
            if slot is None:
                slot = self._slots[actor_id] = Slot(kind)
            slot.suspended = (message_id, list(awaiting), False)
            slot.subscription = self.store.subscribe(
                "settled", [*awaiting, message_id], lambda k, key, r: self.wake_soon(actor_id)
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
        states = self.store.get_many([*awaiting, message_id])
        message = states.pop(message_id, None)
        if message is None or message.state.settled:
            awaiting, wait_all = [], False  # canceled or timed out: replay it to clean up
        settled = [p for p in states.values() if p.state.settled]
        missing = len(states) < len(set(awaiting)) or not awaiting
        if wait_all:
            ready = (
                missing
                or len(settled) >= len(set(awaiting))
                or any(p.state.rejected for p in settled)
            )
        else:
            ready = missing or bool(settled)
        if not ready:
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
        self.submit(self._handle_exit, actor_id, epoch, exit, error, step)

    def _handle_exit(
        self, actor_id: str, epoch: int, exit: Exit, error: ErrorInfo | None, step: str | None
    ) -> None:
        try:
            self._on_exit(actor_id, epoch, exit, error, step)
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

    def restarted(self, record: ActorRecord) -> None:
        """An actor's next incarnation was recorded: activate it now, or at its restart time."""
        with self._lock:
            slot = self._slots.get(record.id)
            if slot is None:
                slot = self._slots[record.id] = Slot(record.kind)
            slot.kind = record.kind
            slot.held = False
            slot.suspended = None
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
        self.deliver(record.id, None)

    def _restart_due(self, actor_id: str) -> None:
        self.submit(self._restart_now, actor_id)

    def _restart_now(self, actor_id: str) -> None:
        record = self.store.execute(due_restart_op(actor_id))
        if record is None:
            # Not due yet by the database's clock (or no longer restarting): look again.
            current = self.store.read(
                lambda conn: conn.execute(
                    "SELECT status, extract(epoch FROM restart_at - clock_timestamp()) "
                    "FROM actors WHERE id = %s",
                    (actor_id,),
                ).fetchone()
            )
            if current is not None and current[0] == "restarting" and current[1] is not None:
                with self._lock:
                    slot = self._slots.get(actor_id)
                    if slot is not None:
                        slot.restart_timer = self.loop.call_later(
                            max(0.0, float(current[1])) + 0.005, self._restart_due, actor_id
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
            if slot.idle_timer is not None:
                slot.idle_timer.cancel()
                slot.idle_timer = None
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
        elif timeout > 0:
            ref.actor_stopped.wait(timeout)

    def finish_cleanups(self, actor_id: str, timeout: float | None) -> None:
        """Let ``actor_id`` replay its canceled messages to clean up (for at most ``timeout``
        s, or ``cleanup_timeout`` for none) before it is ended: a tree ending because it was
        canceled must not cut off the cleanups of the actors in it.
        """
        limit = self.cleanup_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pause = 0.005
        while self.store.read(lambda conn: conn.execute(MARKED, (actor_id,)).fetchone()):
            if time.monotonic() >= deadline:
                log.warning("actor %s did not finish its cleanup in %.1f s", actor_id, limit)
                return
            self._wake(actor_id)  # a suspended handler waits no more: its message ended
            self.deliver(actor_id, None)
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)

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

    # -- lifecycle -----------------------------------------------------------------------------

    def live_activations(self) -> int:
        """How many activations (threads) are running now."""
        with self._lock:
            return sum(1 for s in self._slots.values() if s.activation is not None)

    def suspended_count(self) -> int:
        """How many actors wait with no activation."""
        with self._lock:
            return sum(1 for s in self._slots.values() if s.suspended is not None)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking work, ask every activation to end after its current message, and wait."""
        with self._lock:
            self._closing = True
            refs = [s.ref for s in self._slots.values() if s.ref is not None]
            activations = [s.activation for s in self._slots.values() if s.activation is not None]
            for slot in self._slots.values():
                if slot.subscription is not None:
                    slot.subscription.cancel()
                if slot.idle_timer is not None:
                    slot.idle_timer.cancel()
        for activation in activations:
            activation.request_stop()
        for ref in refs:
            try:
                ref.stop(block=True, timeout=timeout)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.parallel.shutdown(wait=False, cancel_futures=True)
