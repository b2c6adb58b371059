"""Where an actor's exit goes: to its supervisor's mailbox, or to the root policy.

An actor whose parent is a ``Supervisor`` is set to ``restarting`` and its supervisor is sent
``ChildExit``, in one transaction; the supervisor decides. Any other actor (top-level, or the
child of a plain actor or an agent) is handled here by its own child spec: OTP's restart table
and intensity window, over the restart times kept in its row, so a crash loop that spans
process restarts still counts. An actor given up ends with its whole subtree (children first,
in reverse start order): every pending message under it is rejected, and its watchers told.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import msgspec

from .._crashpoints import reached
from ..actors import (
    TYPE_TAG,
    AutoShutdown,
    ChildExit,
    Exit,
    Revive,
    Strategy,
    Supervisor,
    child_view,
    end_child,
    plan_exit,
    should_restart,
    spec_of,
    start_message,
)
from ..store import (
    ActorRecord,
    ActorStatus,
    EndingView,
    ErrorInfo,
    Store,
    decode,
    encode,
    exit_op,
    revive_op,
)

if TYPE_CHECKING:
    from ._host import NodeHost

log = logging.getLogger("promissory.runtime")


class Exits:
    """Routes exits for one node."""

    def __init__(self, store: Store, host: NodeHost) -> None:
        self.store = store
        self.host = host
        self._lock = threading.Lock()
        self._ending: dict[str, threading.Event] = {}

    def handle(
        self,
        actor_id: str,
        epoch: int,
        exit: Exit,
        error: ErrorInfo | None,
        step: str | None = None,
        parent: str | None = None,
    ) -> None:
        """Handle the exit of ``actor_id``'s activation ``epoch``.

        ``step``: the step whose failure escaped the handler; a restart tries it again.
        ``parent``: its parent, as its activation knew it: when that is a ``Supervisor``, the
        exit goes to it in one write and no read.
        """
        if parent is not None and self._tell(actor_id, epoch, parent, exit, error, step, True):
            return
        # With no parent the exit is most likely the root policy's, and when that ends the
        # actor (an agent's run, say) it starts from this read: its row, children and cleanups.
        view = self.store.ending_view(actor_id) if parent is None else None
        record = view.record if view is not None else self._record(actor_id)
        if record is None or record.status is not ActorStatus.RUNNING or record.epoch != epoch:
            # A newer activation (a later epoch) took over, or the actor ended: nothing to do.
            self.host.release(actor_id)
            return
        supervised = self._supervised(record)
        if supervised is None:
            return  # kept: logged, and handled where the parent's class can be loaded
        if supervised:
            self._to_supervisor(record, exit, error, step)
            return
        self._root_policy(record, exit, error, step, view)

    def _supervised(self, record: ActorRecord) -> bool | None:
        """Whether ``record``'s parent is a supervisor (its exit goes there), or ``None`` when
        that cannot be told here (the exit is kept, and logged).
        """
        if record.parent is None:
            return False
        parent = self._record(record.parent)
        if parent is None:
            return False
        if parent.supervisor is not None:
            return parent.supervisor
        try:  # a row from before the column: the class tells
            return issubclass(self.host.resolve_class(parent.kind), Supervisor)
        except Exception as exc:
            log.error(
                "actor %s exited, but whether its parent %s supervises it cannot be told here: "
                "its class %s cannot be loaded (%r); the exit is kept (the actor is held) for a "
                "node that can load it, or the next start",
                record.id,
                parent.id,
                parent.kind,
                exc,
            )
            return None

    def _to_supervisor(
        self, record: ActorRecord, exit: Exit, error: ErrorInfo | None, step: str | None
    ) -> None:
        assert record.parent is not None
        if not self._tell(record.id, record.epoch, record.parent, exit, error, step, False):
            # Nothing matched: either the supervisor is gone, or this exit is no longer the
            # running activation's to report (recorded already, or a newer epoch took over).
            # Read which, never assume (after an ambiguous commit, the write may be ours).
            parent = self._record(record.parent)
            if parent is None or not parent.status.alive:
                log.warning("actor %s exited but its supervisor is gone; ending it", record.id)
                self.end_tree(record.id, exit, error)
                return
            log.info(
                "actor %s: its exit (epoch %d) was recorded already or superseded; its "
                "supervisor %s decides",
                record.id,
                record.epoch,
                record.parent,
            )
            self.host.deliver(record.parent, None)
            return

    def _tell(
        self,
        actor_id: str,
        epoch: int,
        parent: str,
        exit: Exit,
        error: ErrorInfo | None,
        step: str | None,
        supervised: bool,
    ) -> bool:
        """Record the exit and send ``parent`` its ``ChildExit`` (with ``supervised``, only if
        ``parent`` is a supervisor); hand it over here if this node hosts ``parent``. Returns
        whether it was written.
        """
        notice = ChildExit(child=actor_id, exit=exit, error=error)
        mark = self.store.mark()
        self.host.sending(parent)
        sent = None
        try:
            sent = self.store.execute(
                exit_op(
                    actor_id,
                    epoch,
                    parent=parent,
                    message_id=f"{parent}/exit/{actor_id}",
                    param=encode(notice),
                    tags=encode({TYPE_TAG: "ChildExit"}),
                    reason=encode({"exit": exit.value, "error": error}),
                    retry_step=step,
                    supervised=supervised,
                )
            )
            if sent is not None:
                reached("exit.recorded", actor_id)
        finally:
            self.host.sent(parent, sent, mark)
        return sent is not None

    def _root_policy(
        self,
        record: ActorRecord,
        exit: Exit,
        error: ErrorInfo | None,
        step: str | None,
        view: EndingView | None = None,
    ) -> None:
        # The runtime is the one_for_one supervisor of every actor with no supervisor above
        # it, each with its own child spec as the flags: OTP's rules, the same function.
        spec = spec_of(record)
        history: list[float] = decode(record.history, list[float])
        # The database's clock dates a restart (its intensity window, its backoff): an exit
        # that restarts nothing (any end of a temporary actor, a normal one of a transient)
        # plans the same at any time, so it costs no read of it.
        now = self.store.now() if should_restart(spec.restart, exit) else 0.0
        actions, window = plan_exit(
            strategy=Strategy.ONE_FOR_ONE,
            intensity=spec.intensity,
            period=spec.period,
            auto_shutdown=AutoShutdown.NEVER,
            children=[child_view(record, now)],
            child=record.id,
            exit=exit,
            history=history,
            now=now,
        )
        revive = next((a for a in actions if isinstance(a, Revive)), None)
        if revive is not None:
            log.info(
                "restarting actor %s after %s exit (in %.3f s)",
                record.id,
                exit.value,
                revive.delay or 0.0,
            )
            revived = self.store.execute(
                revive_op(
                    record.id,
                    delay=revive.delay,
                    history=encode(window),
                    start=start_message(self.host.resolve_class(record.kind)),
                    retry_step=step,
                    node=self.host.home_for(record.kind),
                    take=True,
                )
            )
            if revived is not None:
                reached("actor.revived", record.id)
                self.host.restarted(revived)
            return
        if error is not None:
            log.warning(
                "actor %s failed and is given up: %s: %s", record.id, error.type, error.message
            )
        self.end_tree(record.id, exit, error, view)

    def end_tree(
        self,
        actor_id: str,
        exit: Exit,
        error: ErrorInfo | None,
        view: EndingView | None = None,
    ) -> None:
        """End an actor and every actor under it, children first, rejecting their mailboxes.

        Each actor may first finish the cleanup replays of its canceled messages (within its
        shutdown time), so a canceled tree's handlers clean up before their actors end.
        ``view``: the actor's ``Store.ending_view`` just read (else it is read here).
        """
        if view is None:
            view = self.store.ending_view(actor_id)
        root: ActorRecord | None = view.record
        pending: bool | None = view.cleanup_pending
        if view.subtree:
            self.end_children(actor_id, view.subtree)
            # Time went by while they ended: the actor's row and cleanups are read again.
            root, pending = self._record(actor_id), None
        if root is not None and root.status is ActorStatus.RUNNING:
            self.host.finish_cleanups(actor_id, spec_of(root).shutdown, pending)
        self.host.shutdown_activation(actor_id, 0)
        end_child(self.store, actor_id, exit, error)
        self.host.forget(actor_id)
        reached("actor.ended", actor_id)
        # A child its handler spawned after the last look (before the end fenced it off).
        self.end_children(actor_id)

    def end_children(self, actor_id: str, first: list[ActorRecord] | None = None) -> None:
        """End every actor under ``actor_id``, deepest and newest first, until none is left
        (a handler still running may start children while its siblings are ended).
        ``first``: the ones to end first, just read (``Store.ending_view``).
        """
        children = self.store.subtree(actor_id) if first is None else first
        while children:
            for child in children:
                shutdown = spec_of(child).shutdown
                if child.status is ActorStatus.RUNNING:  # one in a backoff has no handler
                    self.host.finish_cleanups(child.id, shutdown)
                self.host.shutdown_activation(child.id, shutdown)
                end_child(self.store, child.id, Exit.SHUTDOWN, None)
                self.host.forget(child.id)
                reached("actor.ended", child.id)
            children = self.store.subtree(actor_id)

    def end_marked(self, actor_id: str) -> bool:
        """End the tree of ``actor_id`` if its end was kept (``Store.cancel_actor``, ``stop``)
        and not finished, and this node is the one to do it; returns whether it ended it.

        Called right after the mark by ``Runtime.cancel`` and ``stop``, on the ``ending``
        notice (a cancel from another process), and by recovery for trees a crash cut off; a
        tree already being ended in this process is left to that call, and waited for.
        """
        with self._lock:
            other = self._ending.get(actor_id)
            if other is None:
                self._ending[actor_id] = done = threading.Event()
        if other is not None:
            other.wait()
            return False
        try:
            record = self._record(actor_id)
            if (
                record is None
                or record.status not in (ActorStatus.RUNNING, ActorStatus.RESTARTING)
                or not _marked_ending(record)
                or record.node not in (None, self.host.node_id)
            ):
                return False
            self.end_tree(actor_id, Exit.SHUTDOWN, None)
            return True
        finally:
            with self._lock:
                del self._ending[actor_id]
            done.set()

    def _record(self, actor_id: str) -> ActorRecord | None:
        return self.store.actor_row(actor_id)


def _marked_ending(record: ActorRecord) -> bool:
    reason = bytes(record.reason or b"")
    if not reason.startswith(b"{"):
        return False
    value = msgspec.json.decode(reason)
    return isinstance(value, dict) and "ending" in value
