"""Deterministic-replay checks: run a finished message's handler again from its journal alone.

No model is called and no tool runs: every durable operation must be found in the journal,
with the same fingerprint, and the handler must return the reply it returned the first time.
A handler that reads the clock, draws random numbers, or iterates a set outside a step asks for
something else on replay; this finds it before a crash in production does.

Only messages of stateless actors (agent runs among them) are checked: a stateful actor's
handler sees the state as it is now, not as it was when the message ran.
"""

from __future__ import annotations

import types
from typing import Any

import msgspec

from ..actors import CancelState, Context, EndOfJournal, Journal, Suspend, handler_for
from ..errors import NondeterminismError
from ..runtime import Runtime
from ..store import Fence, PromiseState, decode

__all__ = ["check_replay", "check_replays"]


def check_replay(rt: Runtime, message_id: str) -> str | None:
    """Replay one finished message; ``None`` if it replays exactly, else what went wrong."""
    store = rt.store
    assert store is not None
    records = store.journal(message_id).records
    message = next((r for r in records if r.id == message_id), None)
    if message is None or message.state is not PromiseState.RESOLVED or message.recipient is None:
        return None
    row = store.actor_row(message.recipient)
    if row is None:
        return None
    try:
        cls = rt.host.resolve_class(row.kind)
    except Exception:
        return None
    if cls.state_type not in (None, type(None)):  # DurableActor[None] is stateless too
        return None
    spec = handler_for(cls, message)
    if spec is None:
        return None
    actor: Any = cls.__new__(cls)
    actor.id = message.recipient
    actor.state = None
    activation = types.SimpleNamespace(
        actor=actor,
        actor_id=message.recipient,
        host=rt.host,
        store=store,
        fence=Fence(message.recipient, -1),
        record=row,
    )
    actor._activation = activation  # what the actor reads of its activation: its row
    cancel = CancelState(message_id, store, 0.0)
    cancel.dry = True
    steps = [r for r in records if r.id != message_id]
    ctx = Context(activation, message, Journal(message_id, steps), cancel)
    try:
        result = getattr(actor, spec.method)(ctx, decode(message.param, spec.message_type))
    except EndOfJournal as end:
        return (
            f"the replay of {message_id} asked for step {end.step}, which its journal does not "
            "hold: the handler depends on something outside its steps (time, randomness, "
            "iteration order, a changed prompt)"
        )
    except NondeterminismError as exc:
        return f"the replay of {message_id}: {exc}"
    except Suspend:
        return f"the replay of {message_id} waited on a promise that is still pending"
    except Exception as exc:
        return f"the replay of {message_id} raised {type(exc).__name__}: {exc}"
    replayed = msgspec.json.decode(msgspec.json.encode(result))
    kept: Any = message.value_as()
    if replayed != kept:
        return f"the replay of {message_id} returned {replayed!r}, not the kept {kept!r}"
    return None


def check_replays(rt: Runtime) -> list[str]:
    """Replay every finished message of a stateless actor; the problems found."""
    assert rt.store is not None
    ids = rt.store.finished_messages()
    problems = []
    for message_id in ids:
        problem = check_replay(rt, message_id)
        if problem is not None:
            problems.append(problem)
    return problems
