"""An actor's row as supervision reads it, and the end of an actor for good.

``spec_of`` reads the child spec kept in the row, ``child_view`` what ``plan_exit`` needs to
know of a child, and ``end_child`` ends an actor: its mailbox rejected (with its failure, if it
failed), its watchers told. Supervisors and the runtime's root policy both use them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.structs

from ..store import ActorRecord, ActorStatus, ErrorInfo, PromiseState, encode, end_actor_op
from ._messages import TYPE_TAG
from ._signals import Terminated
from ._spec import ChildSpec, Exit
from ._strategy import ChildView

__all__ = ["child_view", "end_child", "spec_of"]


def end_child(
    store: Any, actor_id: str, exit: Exit, error: ErrorInfo | None, *, delete: bool = False
) -> list[str]:
    """End an actor for good: reject its mailbox (with its failure, if it failed), tell its
    watchers, and with ``delete`` drop its row. Returns the ids of the rejected messages.
    """
    if error is not None:
        failure = msgspec.structs.replace(error, failed_actor=actor_id)
        status = ActorStatus.FAILED
    else:
        text = f"actor {actor_id!r} was stopped ({exit.value})"
        failure = ErrorInfo(type="promissory.errors.ActorStoppedError", message=text, args=[text])
        status = ActorStatus.STOPPED
    down = Terminated(actor=actor_id, exit=exit, error=error)
    _, rejected, _ = store.execute(
        end_actor_op(
            actor_id,
            status=status,
            reason=encode({"exit": exit.value, "error": error}),
            reject_state=PromiseState.REJECTED,
            reject_value=encode(failure),
            down=encode(down),
            down_tags=encode({TYPE_TAG: "Terminated"}),
            delete=delete,
        )
    )
    return list(rejected)


def child_view(record: ActorRecord, now: float) -> ChildView:
    """What ``plan_exit`` needs to know of a child, from its row, at ``now``."""
    spec = spec_of(record)
    history: list[float] = msgspec.json.decode(bytes(record.history))
    started = history[-1] if history else record.created_at.timestamp()
    running_for = max(0.0, now - started)
    return ChildView(
        id=record.id,
        restart=spec.restart,
        significant=spec.significant,
        shutdown=spec.shutdown,
        backoff=spec.backoff,
        alive=record.status in (ActorStatus.RUNNING, ActorStatus.RESTARTING),
        epoch=record.epoch,
        restarts=record.restarts,
        running_for=running_for,
    )


def spec_of(record: ActorRecord) -> ChildSpec:
    """An actor's child spec (the defaults when none was stored)."""
    raw = bytes(record.spec)
    return msgspec.json.decode(raw, type=ChildSpec) if raw not in (b"{}", b"") else ChildSpec()
