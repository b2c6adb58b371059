"""Scenarios the cancellation crash tests run in child processes (``promissory.testing``).

``fan``: the run ``fan/run`` fans out to 100 child actors (``ctx.spawn`` + ``start_call``),
each working in a long async step; once all of them work, the run is canceled, and the process
goes on until the cancel is complete, unless a crash point or ``$CANCEL_KILL_AFTER`` (seconds
after the cancel) kills it first. ``fan_actor`` cancels the actor ``fan`` instead, which ends
it and its 100 workers too. Run again, it only waits for the cancel to complete. Work and
cleanups are marked in ``$CANCEL_MARKS``, across processes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.kit import Fan, FanOut

ACTOR = "fan"
RUN = "fan/run"
N = 100


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fan(rt: Runtime) -> dict[str, Any]:
    return _fan_canceled(rt, RUN)


def fan_actor(rt: Runtime) -> dict[str, Any]:
    """The same fan-out, but the actor ``fan`` is canceled: its run, and then it and its 100
    workers are ended, children first (the ``actor.ended`` crash point is passed 101 times)."""
    return _fan_canceled(rt, ACTOR)


def _fan_canceled(rt: Runtime, target: str) -> dict[str, Any]:
    store = rt.store
    assert store is not None
    marks = os.environ[kit.MARKS_ENV]
    if store.find(RUN) is None:
        rt.spawn(FanOut, id=ACTOR)
        rt.ref(ACTOR).ask(Fan(N, 60.0), id=RUN)
        kit.eventually(
            lambda: len([m for m in kit.marks(marks) if m.name == "work"]) >= N,
            timeout=30,
            what="every worker working",
        )
        assert rt.cancel(target, reason="crash test")
        kill_after = os.environ.get("CANCEL_KILL_AFTER")
        if kill_after:
            threading.Timer(float(kill_after), _die).start()
    started = time.monotonic()
    kit.wait_quiet(store.dsn, RUN, 60)
    if target == ACTOR:
        kit.eventually(
            lambda: not tree_alive(store.dsn), timeout=60, what="the tree of `fan` ended"
        )
    return {"seconds": time.monotonic() - started}


def tree_alive(dsn: str) -> list[str]:
    """The actors of the tree of ``fan`` that have not ended."""
    query = (
        "SELECT id FROM actors WHERE (id = %s OR id LIKE %s) "
        "AND status IN ('running', 'restarting') ORDER BY id"
    )
    return [r[0] for r in kit.sql(dsn, query, ACTOR, ACTOR + "/%")]
