"""One activation of an actor: claim it, drain its durable mailbox, handle and settle messages.

An activation runs on its pykka thread. It claims the actor (a new epoch fences every write
it makes), restores the state snapshot, and handles pending messages one at a time in mailbox
order. For each message it loads the message and its journal in one query (so a message that
was handled meanwhile is skipped), runs the handler with a ``Context``, and then, in one
transaction, settles the
message with the reply and writes the new state snapshot. A handler that waits on a pending
promise ends the activation (the message stays at the head of the mailbox); one that raises
is reported to the host as a crash; one that finds itself fenced off just stops.

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

from .._crashpoints import reached
from ..errors import FencedError, PromissoryError
from ..store import ErrorInfo, Promise, PromiseState, decode, encode, error_info
from ..store._actors import ActorRecord, Fence, claim_op
from ..store._promises import promise_from_row
from ..store._steps import MAILBOX, Completion, cleaned_op, complete_op, journal_query, suspend_op
from ._cancel import Cancelled, CancelState
from ._journal import Journal
from ._signals import Suspend
from ._spec import Exit

if TYPE_CHECKING:
    from ._actor import DurableActor
    from ._host import Host

log = logging.getLogger("promissory.actors")


class Binding(msgspec.Struct, frozen=True):
    """What the runtime hands a new activation: the actor's id and its host."""

    actor_id: str
    host: Any


class Poke(msgspec.Struct, frozen=True):
    """Look at the mailbox; ``message`` is one just committed in this process, if known."""

    message: Promise | None = None


class Passivate(msgspec.Struct, frozen=True):
    """Stop this activation if it is still idle (the host decided it has been idle too long)."""


class Phase(enum.Enum):
    """Where an activation is."""

    NEW = "new"
    ACTIVE = "active"
    ENDED = "ended"


class UnknownMessageError(PromissoryError):
    """The actor has no handler for a message's type; the message is rejected."""


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
        self.seen: set[int] = set()
        """The seqs of the messages this activation has had (read by the host, which skips
        a NOTIFY for one of them)."""
        self._mailbox: dict[str, Promise] = {}
        self._awaiting: dict[str, list[str]] = {}
        self._reload = True
        self._state_json: str | None = None
        self._stop_requested = threading.Event()

    # -- commands from the runtime (on the actor's thread) ------------------------------------

    def receive(self, command: Any) -> None:
        """Handle a runtime command."""
        if self.phase is Phase.ENDED:
            return
        if isinstance(command, Poke):
            self.pokes += 1
            if command.message is not None:
                self._mailbox.setdefault(command.message.id, command.message)
                self._saw(command.message.seq)
            else:
                self._reload = True
            self._drain()
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
            self.actor.state = self.actor.initial_state()
            self._state_json = (
                encode(self.actor.state, what="state") if self.actor.state is not None else None
            )
        self.phase = Phase.ACTIVE
        return True

    def _load_mailbox(self) -> None:
        params = {"actor": self.actor_id, "limit": 1000}
        rows = self.store.read(lambda conn: conn.execute(MAILBOX, params).fetchall())
        known = set(self._mailbox)
        for row in rows:
            promise = promise_from_row(row)
            self._saw(promise.seq)
            if promise.id not in known:
                self._mailbox[promise.id] = promise
            if row[15] is not None:
                self._awaiting[promise.id] = list(row[15])
        self._reload = False

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
            awaiting = self._awaiting.get(message.id)
            if (
                awaiting is not None
                and not message.state.settled
                and not self._any_settled(awaiting)
            ):
                # Loaded while suspended and nothing it waits on has settled: stay suspended.
                self._suspended(message.id, awaiting, False)
                return
            self._handle(message)

    def _any_settled(self, ids: list[str]) -> bool:
        states = self.store.get_many(ids)
        return any(p.state.settled for p in states.values()) or len(states) < len(ids)

    # -- one message ----------------------------------------------------------------------------

    def _handle(self, message: Promise) -> None:
        from ._actor import handler_for
        from ._context import Context

        assert self.fence is not None
        rows, marked, earlier = self._load_journal(message)
        if any(p.id not in self._mailbox for p in earlier):
            # Messages committed before this one (from another process, say) and not seen
            # here yet: they go first (per-actor order).
            for p in earlier:
                self._mailbox.setdefault(p.id, p)
                self._saw(p.seq)
            return
        current = next((p for p in rows if p.id == message.id), None)
        if current is None or (current.state.settled and not marked):
            # Handled already (a late poke, or another activation got there first).
            self._forget(message.id)
            return
        cancel = CancelState(message.id, self.store, self.host.cleanup_timeout)
        if current.state.settled:
            cancel.requested.set()  # canceled or timed out: replay it so it can clean up
        spec = handler_for(type(self.actor), message)
        if spec is None:
            error = UnknownMessageError(
                f"{type(self.actor).__qualname__} has no handler for messages of type "
                f"{message.tags.get('promissory:type')!r}"
            )
            self._complete(message, PromiseState.REJECTED, encode(error_info(error)), False)
            return
        try:
            msg = decode(message.param, spec.message_type)
        except PromissoryError as exc:
            self._complete(message, PromiseState.REJECTED, encode(error_info(exc)), False)
            return
        retry_step = self.record.retry_step if self.record is not None else None
        journal = Journal(message.id, [p for p in rows if p.id != message.id], retry_step)
        ctx = Context(self, message, journal, cancel)
        method = getattr(self.actor, spec.method)
        watch = None
        if not cancel.requested.is_set():
            watch = self.store.subscribe(
                "settled", [message.id], lambda k, key, r: cancel.request()
            )
        try:
            try:
                result = method(ctx, msg)
                reply = encode(result, what=f"reply of {spec.method}")
                state_json = (
                    encode(self.actor.state, what="state") if self.actor.state is not None else None
                )
            finally:
                if watch is not None:
                    watch.cancel()
            if cancel.requested.is_set():
                raise Cancelled(cancel.reason, cancel.deadline)
        except Cancelled:
            self._restore_state()
            self._canceled(message, ctx)
            return
        except Suspend as suspend:
            self._restore_state()
            self._suspend(message, suspend)
            return
        except FencedError:
            self._end()
            return
        except BaseException as exc:
            self._restore_state()
            if cancel.requested.is_set():
                log.info(
                    "actor %s: %r while cleaning up canceled %s", self.actor_id, exc, message.id
                )
                self._canceled(message, ctx)
                return
            if isinstance(exc, type(self.actor).reply_errors) and isinstance(exc, Exception):
                self._complete(message, PromiseState.REJECTED, encode(error_info(exc)), False)
                return
            self._crash(message, exc)
            return
        reached("handler.returned", message.id)
        stopping = ctx.exit[0].value if ctx.exit is not None else None
        done = self._complete(message, PromiseState.RESOLVED, reply, True, state_json, stopping)
        if done:
            self._exit_if_asked(ctx)

    def _exit_if_asked(self, ctx: Any) -> None:
        """End the actor after its message if the handler asked to (``ctx.stop``)."""
        if ctx.exit is not None and self.phase is Phase.ACTIVE:
            exit, reason = ctx.exit
            self.phase = Phase.ENDED
            failure: ErrorInfo | None = None
            if exit is Exit.ESCALATED or exit is Exit.ABNORMAL:
                failure = ErrorInfo(
                    type="promissory.actors._supervisor.EscalationError",
                    message=reason or exit.value,
                    args=[reason or exit.value],
                )
            self.host.actor_exited(self, exit, failure)
            self.actor.stop()

    def _load_journal(self, message: Promise) -> tuple[list[Promise], bool, list[Promise]]:
        """The message and its steps, whether it is marked for a cleanup replay, and pending
        messages to this actor that came before it.
        """
        query, params = journal_query(message.id, self.actor_id, message.seq)
        rows = self.store.read(lambda conn: conn.execute(query, params).fetchall())
        marked = any(r[0] == message.id and r[15] is not None for r in rows if not r[16])
        journal = [promise_from_row(r) for r in rows if not r[16]]
        earlier = [promise_from_row(r) for r in rows if r[16]]
        return journal, marked, earlier

    def _canceled(self, message: Promise, ctx: Any) -> None:
        """The message was canceled (or timed out) and its handler is done: clear its mark."""
        assert self.fence is not None
        stopping = ctx.exit[0].value if ctx.exit is not None else None
        try:
            self.store.execute(
                cleaned_op(message.id, self.fence, stopping, timed_out=ctx._cancel.deadline)
            )
        except FencedError:
            self._end()
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
    ) -> bool:
        assert self.fence is not None
        try:
            result = self.store.execute(
                complete_op(
                    message.id,
                    self.fence,
                    state=state,
                    value=value,
                    actor_state=state_json if write_state else None,
                    write_state=write_state,
                    stopping=stopping,
                )
            )
        except FencedError:
            self._end()
            return False
        reached("message.settled", message.id)
        if result is Completion.DONE and write_state:
            self._state_json = state_json
        elif result is not Completion.DONE:
            # The message was settled by someone else meanwhile (canceled, timed out): its
            # effects on the state are not kept, and its cleanup mark is cleared (its handler
            # ran to the end; there is nothing to clean up).
            self._restore_state()
            try:
                self.store.execute(cleaned_op(message.id, self.fence))
            except FencedError:
                self._end()
                return False
        self._forget(message.id)
        return result is Completion.DONE

    def _forget(self, message_id: str) -> None:
        self._mailbox.pop(message_id, None)
        self._awaiting.pop(message_id, None)

    def _suspend(self, message: Promise, suspend: Suspend) -> None:
        assert self.fence is not None
        try:
            settled = self.store.execute(suspend_op(message.id, self.fence, suspend.awaiting))
        except FencedError:
            self._end()
            return
        if _ready(suspend, settled):
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


def _ready(suspend: Suspend, settled: list[str]) -> bool:
    if not settled:
        return False
    if not suspend.wait_all:
        return True
    return len(set(settled)) >= len(set(suspend.awaiting))
