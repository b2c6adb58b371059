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

from ..actors._actor import handler_for
from ..actors._cancel import CancelState, EndOfJournal
from ..actors._context import Context
from ..actors._journal import Journal
from ..actors._signals import Suspend
from ..errors import NondeterminismError
from ..runtime import Runtime
from ..store import PromiseState, decode
from ..store._actors import Fence
from ..store._promises import promise_from_row
from ..store._steps import journal_query

__all__ = ["check_replay", "check_replays"]

_FINISHED = """
SELECT p.id FROM promises p JOIN actors a ON a.id = p.recipient
WHERE p.kind = 'message' AND p.state = 'resolved'
ORDER BY p.seq
"""


def check_replay(rt: Runtime, message_id: str) -> str | None:
    """Replay one finished message; ``None`` if it replays exactly, else what went wrong."""
    store = rt.store
    assert store is not None
    rows = store.read(lambda conn: conn.execute(*journal_query(message_id, "", 0)).fetchall())
    records = [promise_from_row(r) for r in rows]
    message = next((r for r in records if r.id == message_id), None)
    if message is None or message.state is not PromiseState.RESOLVED or message.recipient is None:
        return None
    query = "SELECT kind FROM actors WHERE id = %s"
    kind_row = store.read(lambda conn: conn.execute(query, (message.recipient,)).fetchone())
    if kind_row is None:
        return None
    try:
        cls = rt.host.resolve_class(kind_row[0])
    except Exception:
        return None
    if cls.state_type is not None:
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
        record=None,
    )
    cancel = CancelState(message_id, store, 0.0)
    cancel.dry = True
    steps = [r for r in records if r.id != message_id]
    ctx = Context(activation, message, Journal(message_id, steps), cancel)  # type: ignore[arg-type]
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
    ids = [r[0] for r in rt.store.read(lambda conn: conn.execute(_FINISHED).fetchall())]
    problems = []
    for message_id in ids:
        problem = check_replay(rt, message_id)
        if problem is not None:
            problems.append(problem)
    return problems
