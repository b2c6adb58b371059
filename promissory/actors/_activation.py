"""One activation of an actor: claim it, drain its durable mailbox, handle and settle messages.

An activation runs on its pykka thread. It claims the actor (a new epoch fences every write it
makes), restores the state snapshot, and handles pending messages one at a time in mailbox
order. One started by a take-up of many actors at once (the recovery pass, ``take_up_op``) is
handed its claim, its mailbox, its first message's journal and what that message waits on, and
starts with no write or read of its own. For each message it loads the message and its journal
in one query (so a message that was handled meanwhile is skipped), unless the message was
handed over by its send in this process to this very incarnation with nothing unseen before it
(``Fresh``: it has no journal yet, and nothing is read). It runs the handler with a
``Context``, and then, in one transaction, settles the message with the reply, writes the new
state snapshot, and writes what the handler sent (its outbox) and what it asked to commit with
its settle. A handler that waits on a pending promise ends the activation (the message stays at
the head of the mailbox); one that raises is reported to the host as a crash; one that finds
itself fenced off just stops.

The activation's states::

    NEW --claim--> ACTIVE --drained--> ACTIVE (idle; the host may passivate it)
                     |--suspended / crashed / fenced / passivated--> ENDED
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import TYPE_CHECKING, Any

import msgspec
import pykka

from .. import _tracing
from .._crashpoints import reached
from ..errors import FencedError, PromissoryError, UnknownMessageError
from ..store import (
    STORE_FAULTS,
    ActorRecord,
    Completion,
    ErrorInfo,
    EventKind,
    Fence,
    JournalLoad,
    MailboxEntry,
    Op,
    Promise,
    PromiseState,
    TakenUp,
    bundle,
    claim_op,
    cleaned_op,
    complete_op,
    decode,
    encode,
    error_info,
    suspend_op,
)
from ._cancel import Canceled, CancelState
from ._context import Context
from ._handled import Handled, classify
from ._handlers import handler_for
from ._journal import Journal
from ._signals import Suspend, wait_is_over
from ._spec import Exit

if TYPE_CHECKING:
    from ._actor import DurableActor
    from ._engine import Handling
    from ._hosting import Host

log = logging.getLogger("promissory.actors")


class Binding(msgspec.Struct, frozen=True):
    """What the runtime hands a new activation: the actor's id and its host."""

    actor_id: str
    host: Any
    first: Any = None
    """A command queued before the activation's thread starts, which finds it at once
    (no wake-up of a thread already waiting on its inbox)."""


class Fresh(msgspec.Struct, frozen=True):
    """What the send of a message just committed in this process told about it, so that its
    activation can start it with no read: the recipient's ``epoch`` when it was written, the
    seqs of the pending messages to the recipient that came ``earlier`` (``None``: many),
    and the store's settle ``mark`` from before the send (``Store.settled_since``).
    """

    epoch: int
    earlier: tuple[int, ...] | None
    mark: int


class Poke(msgspec.Struct, frozen=True):
    """Look at the mailbox; ``message`` is one just committed in this process, if known;
    ``taken`` is the actor's claim and first reads, made by a take-up of many actors at once
    (``take_up_op``): a new activation starts from them with no write and no read of its own.
    """

    message: Promise | None = None
    fresh: Fresh | None = None
    taken: TakenUp | None = None


class Passivate(msgspec.Struct, frozen=True):
    """Stop this activation if it is still idle (the host decided it has been idle too long)."""


class Phase(enum.Enum):
    """Where an activation is."""

    NEW = "new"
    ACTIVE = "active"
    ENDED = "ended"


class Activation:
    """The durable side of one pykka actor instance."""

    def __init__(self, actor: DurableActor[Any], binding: Binding) -> None:
        self.actor = actor
        self.actor_id = binding.actor_id
        self.host: Host = binding.host
        self.store = self.host.store
        self.phase = Phase.NEW
        self.record: ActorRecord | None = None
        self.fence: Fence | None = None
        self.pokes = 0
        self.handled = 0
        """Handler runs so far (a handler can tell whether another ran since its last one)."""
        self.seen: set[int] = set()
        """The seqs of the messages this activation has had (read by the host, which skips
        a NOTIFY for one of them)."""
        self._mailbox: dict[str, Promise] = {}
        self._fresh: dict[str, Fresh] = {}
        """Messages handed over by their send in this process (see ``_unread``)."""
        self._awaiting: dict[str, tuple[list[str], bool]] = {}
        self._settled: dict[str, Promise] = {}
        """Settled promises read for it before it started, for its first handler's waits."""
        self._journals: dict[str, JournalLoad] = {}
        """Journals read for it before it started (a take-up), used once each."""
        self._awaited: dict[str, Promise] = {}
        """What its first message waits on, read for it before it started (a take-up)."""
        """What each suspended message waits on, and whether on all of it (from the store)."""
        self._reload = True
        self._state_json: str | None = None
        self._stop_requested = threading.Event()
        self.superseded = threading.Event()
        """Set by the node when this activation outlived its shutdown time: a newer
        activation (a newer epoch) may run, so nothing more this one does may be kept (see
        ``CancelState``)."""
        self.starting = False
        self.build_error: Exception | None = None
        """What the actor's ``on_start`` raised: the activation reports it as its crash."""

    # -- commands from the runtime (on the actor's thread) ------------------------------------

    def receive(self, command: Any) -> None:
        """Handle a runtime command."""
        if self.phase is Phase.ENDED:
            return
        if isinstance(command, Poke):
            self.pokes += 1
            if command.taken is not None and self.phase is Phase.NEW:
                if not self._claimed(command.taken.record):
                    self._end()
                    return
                self._take(command.taken.mailbox)
                self._reload = not command.taken.whole
                self._journals.update(command.taken.journals)
                self._awaited.update(command.taken.awaited)
            if command.message is not None:
                self._mailbox.setdefault(command.message.id, command.message)
                self._saw(command.message.seq)
                fresh = command.fresh
                if fresh is not None:
                    if self.phase is Phase.NEW:
                        # The claim to come takes the next epoch: no other incarnation can
                        # come between the send and it.
                        fresh = Fresh(fresh.epoch + 1, fresh.earlier, fresh.mark)
                        if fresh.earlier == () and self.pokes == 1:
                            self._reload = False  # nothing pending came before it
                    self._fresh[command.message.id] = fresh
            elif command.taken is None:
                self._reload = True
            try:
                self._drain()
            except STORE_FAULTS as exc:
                self._faulted(exc)
        elif isinstance(command, Passivate):
            self._end()
        else:
            raise TypeError(f"unknown activation command: {command!r}")

    def _saw(self, seq: int) -> None:
        if len(self.seen) > 4096:
            self.seen.clear()  # forgetting only costs a mailbox read for a late echo
        self.seen.add(seq)

    def request_stop(self) -> None:
        """Ask the activation to end after its current message (from any thread)."""
        self._stop_requested.set()
        try:
            self.actor.actor_ref.tell(Passivate())
        except pykka.ActorDeadError:
            pass

    def died(self) -> None:
        """The pykka actor died outside a handler; tell the host so it can start another."""
        if self.phase is not Phase.ENDED:
            self.phase = Phase.ENDED
            self.host.activation_ended(self)

    # -- the mailbox ----------------------------------------------------------------------------

    def _claim(self) -> bool:
        record: ActorRecord | None = self.store.execute(claim_op(self.actor_id, self.host.node_id))
        if record is None:
            log.info("actor %s is not alive here; activation ends", self.actor_id)
            return False
        return self._claimed(record)

    def _claimed(self, record: ActorRecord) -> bool:
        """Start from the actor's row as the claim left it; ``False`` if it is not to run."""
        self.record = record
        self.fence = Fence(record.id, record.epoch)
        stopping = _stopping(record)
        if stopping is not None:
            # The last handler ended this actor and the process died before that was
            # handled: handle it now, instead of running again.
            self.phase = Phase.ENDED
            self.host.actor_exited(self, stopping, None)
            self.actor.stop()
            return False
        if self.build_error is not None:
            # on_start failed: a crash like a handler's, for supervision to decide on.
            self.phase = Phase.ENDED
            log.warning(
                "actor %s could not start: on_start raised %r", self.actor_id, self.build_error
            )
            self.host.actor_crashed(self, None, self.build_error)
            self.actor.stop()
            return False
        actor_type = type(self.actor)
        if record.state is not None:
            self._state_json = bytes(record.state).decode()
            try:
                self.actor.state = decode(record.state, actor_type.state_type or Any)
            except PromissoryError as exc:
                # A snapshot this code cannot read (an older shape): the actor cannot run.
                # Report it as a crash, so supervision gives it up and its callers hear why.
                self.phase = Phase.ENDED
                self.host.actor_crashed(self, None, exc)
                self.actor.stop()
                return False
        else:
            try:
                self.actor.state = self.actor.initial_state()
                self._state_json = (
                    encode(self.actor.state, what="state") if self.actor.state is not None else None
                )
            except Exception as exc:
                # A first state that cannot be made or kept is a failure to build the actor:
                # a crash for supervision, never a message left pending with no one to run it.
                self.phase = Phase.ENDED
                log.warning("actor %s could not start: initial_state raised %r", self.actor_id, exc)
                self.host.actor_crashed(self, None, exc)
                self.actor.stop()
                return False
        self.phase = Phase.ACTIVE
        return True

    def _load_mailbox(self) -> None:
        # With the head message's journal: the message handled next starts with no read.
        entries, head = self.store.mailbox_and_head(self.actor_id)
        self._take(entries)
        if head is not None:
            self._journals[head.records[0].id] = head
        self._reload = False

    def _take(self, entries: list[MailboxEntry]) -> None:
        known = set(self._mailbox)
        for entry in entries:
            promise = entry.promise
            self._saw(promise.seq)
            if promise.id not in known:
                self._mailbox[promise.id] = promise
            if entry.awaiting is not None:
                self._awaiting[promise.id] = (entry.awaiting, entry.wait_all)

    def _next(self) -> Promise | None:
        if not self._mailbox:
            return None
        return min(self._mailbox.values(), key=_seq_key)

    def _drain(self) -> None:
        if self.phase is Phase.NEW and not self._claim():
            self._end()
            return
        if self.phase is Phase.ENDED:
            return
        while self.phase is Phase.ACTIVE:
            if self._stop_requested.is_set():
                self._end()
                return
            if self._reload:
                self._load_mailbox()
            message = self._next()
            if message is None:
                self.host.activation_idle(self)
                return
            waiting = self._awaiting.get(message.id)
            if waiting is not None and not message.state.settled:
                awaiting, wait_all = waiting
                known, self._awaited = self._awaited, {}
                if all(i in known for i in awaiting):
                    states = {i: known[i].state for i in awaiting}  # read by the take-up
                    # A settled promise stays as it is: the handler's wait need not read it.
                    self._settled.update({i: p for i, p in known.items() if p.state.settled})
                else:
                    found = self.store.get_many(awaiting)
                    states = {id: p.state for id, p in found.items()}
                if not wait_is_over(awaiting, states, wait_all):
                    # Loaded while suspended and its wait is not over: stay suspended.
                    self._suspended(message.id, awaiting, wait_all)
                    return
            self._handle(message)

    # -- one message ----------------------------------------------------------------------------

    def _handle(self, message: Promise) -> None:
        prepared = self._prepare(message)
        if prepared is None:
            return
        ctx, method, msg = prepared
        error, reply, state_json = self._run(message, ctx, method, msg)
        cancel = ctx.cancel_state
        outcome = classify(
            error, canceled=cancel.requested.is_set(), reply_errors=type(self.actor).reply_errors
        )
        if outcome is not Handled.REPLY and outcome is not Handled.FENCED:
            self._restore_state()
        if outcome is Handled.REPLY:
            reached("handler.returned", message.id)
            stopping = ctx.exit[0].value if ctx.exit is not None else None
            # A state as it was is not written again (no new version of the actor's row);
            # the settle of a ``with_settle`` write still locks the row (see ``_complete``).
            changed = state_json != self._state_json or bool(ctx._run.with_settle)
            done = self._complete(
                message,
                PromiseState.RESOLVED,
                reply,
                changed,
                state_json,
                stopping,
                with_settle=ctx._run.with_settle,
                via=ctx._run,
            )
            if done:
                self._exit_if_asked(ctx)
        elif outcome is Handled.CANCELED:
            if error is not None and not isinstance(error, Canceled):
                log.info(
                    "actor %s: %r while cleaning up canceled %s", self.actor_id, error, message.id
                )
            self._canceled(message, ctx)
        elif outcome is Handled.SUSPEND:
            assert isinstance(error, Suspend)
            self._suspend(message, error, ctx._run)
        elif outcome is Handled.FENCED:
            assert isinstance(error, FencedError)
            ctx._run.discard(error)
            self._fenced(message.id, error)
        elif outcome is Handled.STORE_FAULT:
            # Not the handler's failure: the message stays pending, and the node hands it to a
            # new activation later (see ``_faulted``); what it sent goes again then.
            assert error is not None
            ctx._run.discard(error)
            raise error
        elif outcome is Handled.REJECT:
            assert error is not None
            self._complete(
                message, PromiseState.REJECTED, encode(error_info(error)), False, via=ctx._run
            )
        else:
            assert error is not None
            try:
                ctx._run.flush()  # what it sent before it crashed is sent, as if not deferred
            except Exception as exc:
                log.info("actor %s: the messages it sent were not kept: %r", self.actor_id, exc)
            self._crash(message, error)

    def _prepare(self, message: Promise) -> tuple[Context, Any, Any] | None:
        """The context, the handler and the decoded message, or ``None`` when it is not to be
        handled now: earlier messages go first, it was handled already, or it cannot be (no
        handler for its type, a param that does not decode: then it is rejected).
        """
        assert self.fence is not None
        earlier: list[Promise]
        taken = self._journals.pop(message.id, None)
        if self._unread(message):
            rows, marked, earlier = [message], False, []
        elif taken is not None:
            rows, marked, earlier = taken.records, taken.marked, taken.earlier
        else:
            rows, marked, earlier = self._load_journal(message)
        if any(p.id not in self._mailbox for p in earlier):
            # Messages committed before this one (from another process, say) and not seen
            # here yet: they go first (per-actor order).
            for p in earlier:
                self._mailbox.setdefault(p.id, p)
                self._saw(p.seq)
            return None
        current = next((p for p in rows if p.id == message.id), None)
        if current is None or (current.state.settled and not marked):
            # Handled already (a late poke, or another activation got there first).
            self._forget(message.id)
            return None
        cancel = CancelState(message.id, self.store, self.host.cleanup_timeout)
        cancel.superseded = self.superseded
        cancel.node_alive = self.host.lease_held
        if current.state.settled:
            cancel.requested.set()  # canceled or timed out: replay it so it can clean up
        spec = handler_for(type(self.actor), message)
        if spec is None:
            error = UnknownMessageError(
                f"{type(self.actor).__qualname__} has no handler for messages of type "
                f"{message.tags.get('promissory:type')!r}"
            )
            self._complete(message, PromiseState.REJECTED, encode(error_info(error)), False)
            return None
        try:
            msg = decode(message.param, spec.message_type)
        except Exception as exc:
            # Whatever the stored message holds, it cannot block the mailbox: it is rejected.
            self._complete(message, PromiseState.REJECTED, encode(error_info(exc)), False)
            return None
        retry_step = self.record.retry_step if self.record is not None else None
        journal = Journal(message.id, [p for p in rows if p.id != message.id], retry_step)
        ctx = Context(self, message, journal, cancel)
        if self._settled:
            ctx._run.settled.update(self._settled)
            self._settled = {}
        return ctx, getattr(self.actor, spec.method), msg

    def _run(
        self, message: Promise, ctx: Context, method: Any, msg: Any
    ) -> tuple[BaseException | None, str | None, str | None]:
        """Run the handler, watching for its message to be settled by someone else; return
        what it raised (or ``None``), its encoded reply and the encoded new state.
        """
        self.handled += 1
        cancel = ctx.cancel_state
        watch = None
        if not cancel.requested.is_set():
            watch = self.store.subscribe(EventKind.SETTLED, [message.id], cancel.settled_elsewhere)
        try:
            with _tracing.handling(ctx):
                result = method(ctx, msg)
            reply = encode(result, what=f"reply of {method.__name__}")
            state = self.actor.state
            state_json = encode(state, what="state") if state is not None else None
        except BaseException as exc:
            return exc, None, None
        finally:
            if watch is not None:
                watch.cancel()
        return None, reply, state_json

    def _exit_if_asked(self, ctx: Any) -> None:
        """End the actor after its message if the handler asked to (``ctx.stop``)."""
        if ctx.exit is not None and self.phase is Phase.ACTIVE:
            exit, reason = ctx.exit
            self.phase = Phase.ENDED
            failure: ErrorInfo | None = None
            if exit is Exit.ESCALATED or exit is Exit.ABNORMAL:
                failure = ErrorInfo(
                    type="promissory.errors.EscalationError",
                    message=reason or exit.value,
                    args=[reason or exit.value],
                )
            self.host.actor_exited(self, exit, failure)
            self.actor.stop()

    def _unread(self, message: Promise) -> bool:
        """Whether ``message`` can start with no journal read: it was written in this process
        to this very incarnation (so no other one can have kept a step of it), no pending
        message came before it, and no settle of it (a cancel) has been heard of since.
        The handler's watcher, subscribed first, hears of a settle that comes later.
        """
        fresh = self._fresh.pop(message.id, None)
        if fresh is None or self.fence is None:
            return False
        if fresh.epoch != self.fence.epoch or fresh.earlier is None:
            return False
        if any(seq not in self.seen for seq in fresh.earlier):
            return False  # one this activation has not had: it goes first
        if any(p.seq < message.seq for p in self._mailbox.values()):
            return False  # earlier ones go first; it is read when its turn comes
        return not self.store.settled_since(message.id, fresh.mark)

    def _load_journal(self, message: Promise) -> tuple[list[Promise], bool, list[Promise]]:
        """The message and its steps, whether it is marked for a cleanup replay, and pending
        messages to this actor that came before it.
        """
        loaded = self.store.journal(message.id, self.actor_id, message.seq)
        return loaded.records, loaded.marked, loaded.earlier

    def _canceled(self, message: Promise, ctx: Any) -> None:
        """The message was canceled (or timed out) and its handler is done: clear its mark."""
        assert self.fence is not None
        stopping = ctx.exit[0].value if ctx.exit is not None else None
        try:
            ctx._run.execute(
                cleaned_op(message.id, self.fence, stopping, timed_out=ctx.cancel_state.deadline)
            )
        except FencedError as exc:
            ctx._run.discard(exc)
            self._fenced(message.id, exc)
            return
        self._forget(message.id)
        self._exit_if_asked(ctx)

    def _complete(
        self,
        message: Promise,
        state: PromiseState,
        value: str | None,
        write_state: bool,
        state_json: str | None = None,
        stopping: str | None = None,
        with_settle: list[tuple[Op, Any]] | None = None,
        via: Handling | None = None,
    ) -> bool:
        assert self.fence is not None
        op = complete_op(
            message.id,
            self.fence,
            state=state,
            value=value,
            actor_state=state_json if write_state else None,
            write_state=write_state,
            stopping=stopping,
        )
        # With the handler's outbox before it (``via``): what it sent goes with its reply.
        execute = via.execute if via is not None else self.store.execute
        try:
            if with_settle:
                # The settle first: it locks this actor's row at its epoch, so the writes
                # after it are made by this activation or by none (each is fenced too).
                results = execute(bundle([op, *(w for w, _ in with_settle)]))
                result = results[0]
                if isinstance(result, BaseException):
                    raise result
            else:
                result = execute(op)
        except FencedError as exc:
            if via is not None:
                via.discard(exc)
            self._fenced(message.id, exc)
            return False
        reached("message.settled", message.id)
        if with_settle and result is Completion.DONE:
            for (_, done), outcome in zip(with_settle, results[1:], strict=True):
                done(outcome)
        if result is Completion.DONE and write_state:
            self._state_json = state_json
        elif result is not Completion.DONE:
            # The message was settled by someone else meanwhile (canceled, timed out): its
            # effects on the state are not kept, and its cleanup mark is cleared (its handler
            # ran to the end; there is nothing to clean up).
            self._restore_state()
            try:
                self.store.execute(cleaned_op(message.id, self.fence))
            except FencedError as exc:
                self._fenced(message.id, exc)
                return False
        self._forget(message.id)
        return result is Completion.DONE

    def _forget(self, message_id: str) -> None:
        self._mailbox.pop(message_id, None)
        self._fresh.pop(message_id, None)
        self._awaiting.pop(message_id, None)

    def _suspend(self, message: Promise, suspend: Suspend, via: Handling) -> None:
        assert self.fence is not None
        try:
            states = via.execute(
                suspend_op(message.id, self.fence, suspend.awaiting, suspend.wait_all)
            )
        except FencedError as exc:
            via.discard(exc)
            self._fenced(message.id, exc)
            return
        if wait_is_over(suspend.awaiting, states, suspend.wait_all):
            return  # what it waits on settled while we were suspending: replay at once
        self._suspended(message.id, suspend.awaiting, suspend.wait_all)

    def _suspended(self, message_id: str, awaiting: list[str], wait_all: bool) -> None:
        self.phase = Phase.ENDED
        self.host.activation_suspended(self, message_id, awaiting, wait_all)
        self.actor.stop()

    def _crash(self, message: Promise, error: BaseException) -> None:
        self.phase = Phase.ENDED
        log.info("actor %s failed handling %s: %r", self.actor_id, message.id, error)
        self.host.actor_crashed(self, message, error)
        self.actor.stop()

    def _restore_state(self) -> None:
        state_type = type(self.actor).state_type
        if self._state_json is None:
            self.actor.state = None
        else:
            self.actor.state = decode(self._state_json.encode(), state_type or Any)

    def _faulted(self, exc: BaseException) -> None:
        """The database failed this activation's work (away, or busy past the store's wait):
        not a crash. It ends with its messages pending, as a kill would leave them, and the
        node starts another once the database answers; nothing kept is lost or run twice.
        """
        self.phase = Phase.ENDED
        self.host.activation_faulted(self, exc)
        self.actor.stop()

    def _fenced(self, message_id: str, exc: FencedError) -> None:
        """A write of this activation was refused: a newer one claimed the actor. Nothing it
        did since is kept; it ends here.
        """
        epoch = self.fence.epoch if self.fence is not None else -1
        # Fenced by its own node (it lost its lease, or outlived its shutdown time): the node
        # has said so once already; else another activation took over, which is news.
        level = logging.INFO if self.superseded.is_set() else logging.WARNING
        log.log(
            level,
            "actor %s: activation %d was fenced off while handling %s (a newer activation "
            "holds the actor); nothing more it does is kept: %s",
            self.actor_id,
            epoch,
            message_id,
            exc,
        )
        self._end()

    def _end(self) -> None:
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        self.host.activation_ended(self)
        self.actor.stop()


def _stopping(record: ActorRecord) -> Exit | None:
    if record.reason is None:
        return None
    try:
        reason = msgspec.json.decode(record.reason)
    except msgspec.DecodeError:
        return None
    value = reason.get("stopping") if isinstance(reason, dict) else None
    return Exit(value) if value in {e.value for e in Exit} else None


def _seq_key(p: Promise) -> Any:
    return p.seq
