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
from ..actors import ChildSpec, Exit
from ..actors._messages import TYPE_TAG, start_message
from ..actors._signals import ChildExit
from ..actors._spec import intensity_allows, should_restart
from ..actors._supervisor import Supervisor, end_child
from ..store import ErrorInfo, Store, decode, encode
from ..store._actors import (
    ACTOR_COLUMNS,
    ActorRecord,
    ActorStatus,
    actor_from_row,
    exit_op,
    revive_op,
)

if TYPE_CHECKING:
    from ._host import NodeHost

log = logging.getLogger("promissory.runtime")

_SUBTREE = f"""
WITH RECURSIVE tree AS (
    SELECT id, 1 AS depth FROM actors WHERE parent = %s
    UNION ALL
    SELECT a.id, t.depth + 1 FROM actors a JOIN tree t ON a.parent = t.id
)
SELECT {ACTOR_COLUMNS} FROM actors a JOIN tree USING (id)
WHERE a.status IN ('running', 'restarting')
ORDER BY tree.depth DESC, a.seq DESC
"""


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
    ) -> None:
        """Handle the exit of ``actor_id``'s activation ``epoch``.

        ``step``: the step whose failure escaped the handler; a restart tries it again.
        """
        record = self._record(actor_id)
        if record is None or record.status is not ActorStatus.RUNNING or record.epoch != epoch:
            # Another incarnation took over, or the actor ended meanwhile: nothing to do.
            self.host.release(actor_id)
            return
        if record.parent is not None and self._is_supervisor(record.parent):
            self._to_supervisor(record, exit, error, step)
            return
        self._root_policy(record, exit, error, step)

    def _to_supervisor(
        self, record: ActorRecord, exit: Exit, error: ErrorInfo | None, step: str | None
    ) -> None:
        assert record.parent is not None
        notice = ChildExit(child=record.id, exit=exit, error=error)
        sent = self.store.execute(
            exit_op(
                record.id,
                record.epoch,
                parent=record.parent,
                message_id=f"{record.parent}/exit/{record.id}",
                param=encode(notice),
                tags=encode({TYPE_TAG: "ChildExit"}),
                reason=encode({"exit": exit.value, "error": error}),
                retry_step=step,
            )
        )
        if sent is None:
            log.warning("actor %s exited but its supervisor is gone; ending it", record.id)
            self.end_tree(record.id, exit, error)
            return
        self.host.deliver(record.parent, sent)

    def _root_policy(
        self, record: ActorRecord, exit: Exit, error: ErrorInfo | None, step: str | None
    ) -> None:
        spec = spec_of(record)
        history: list[float] = decode(record.history, list[float])
        now = self._db_now()
        allowed, window = intensity_allows(history, now, spec.intensity, spec.period)
        if should_restart(spec.restart, exit) and allowed:
            delay = spec.backoff.delay(len(window)) if spec.backoff is not None else None
            log.info("restarting actor %s after %s exit", record.id, exit.value)
            revived = self.store.execute(
                revive_op(
                    record.id,
                    delay=delay,
                    history=encode(window),
                    start=start_message(self.host.resolve_class(record.kind)),
                    retry_step=step,
                )
            )
            if revived is not None:
                self.host.restarted(revived)
            return
        if error is not None:
            log.warning(
                "actor %s failed and is given up: %s: %s", record.id, error.type, error.message
            )
        self.end_tree(record.id, exit, error)

    def end_tree(self, actor_id: str, exit: Exit, error: ErrorInfo | None) -> None:
        """End an actor and every actor under it, children first, rejecting their mailboxes.

        Each actor may first finish the cleanup replays of its canceled messages (within its
        shutdown time), so a canceled tree's handlers clean up before their actors end.
        """
        self._end_children(actor_id)
        root = self._record(actor_id)
        if root is not None and root.status is ActorStatus.RUNNING:
            self.host.finish_cleanups(actor_id, spec_of(root).shutdown)
        self.host.shutdown_activation(actor_id, 0)
        end_child(self.store, actor_id, exit, error)
        self.host.forget(actor_id)
        reached("actor.ended", actor_id)
        # A child its handler spawned after the last look (before the end fenced it off).
        self._end_children(actor_id)

    def _end_children(self, actor_id: str) -> None:
        """End every actor under ``actor_id``, deepest and newest first, until none is left
        (a handler still running may start children while its siblings are ended).
        """
        while rows := self.store.read(lambda conn: conn.execute(_SUBTREE, (actor_id,)).fetchall()):
            for row in rows:
                child = actor_from_row(row)
                shutdown = spec_of(child).shutdown
                if child.status is ActorStatus.RUNNING:  # one in a backoff has no handler
                    self.host.finish_cleanups(child.id, shutdown)
                self.host.shutdown_activation(child.id, shutdown)
                end_child(self.store, child.id, Exit.SHUTDOWN, None)
                self.host.forget(child.id)
                reached("actor.ended", child.id)

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
        query = f"SELECT {ACTOR_COLUMNS} FROM actors WHERE id = %s"
        row = self.store.read(lambda conn: conn.execute(query, (actor_id,)).fetchone())
        return actor_from_row(row) if row else None

    def _is_supervisor(self, actor_id: str) -> bool:
        record = self._record(actor_id)
        if record is None:
            return False
        try:
            return issubclass(self.host.resolve_class(record.kind), Supervisor)
        except Exception:
            return False

    def _db_now(self) -> float:
        query = "SELECT extract(epoch FROM clock_timestamp())"
        row = self.store.read(lambda conn: conn.execute(query).fetchone())
        assert row is not None
        return float(row[0])


def spec_of(record: ActorRecord) -> ChildSpec:
    """An actor's child spec (the defaults when none was stored)."""
    raw = bytes(record.spec)
    if raw in (b"", b"{}"):
        return ChildSpec()
    return msgspec.json.decode(raw, type=ChildSpec)


def _marked_ending(record: ActorRecord) -> bool:
    reason = bytes(record.reason or b"")
    if not reason.startswith(b"{"):
        return False
    value = msgspec.json.decode(reason)
    return isinstance(value, dict) and "ending" in value
