"""Scenarios the cancellation crash tests run in child processes (``promissory.testing``).

``fan``: the run ``fan/run`` fans out to 100 child actors (``ctx.spawn`` + ``start_call``),
each working in a long async step; once all of them work, the run is canceled, and the process
goes on until the cancel is complete, unless a crash point or ``$CANCEL_KILL_AFTER`` (seconds
after the cancel) kills it first. Run again, it only waits for the cancel to complete. Work and
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

RUN = "fan/run"
N = 100


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fan(rt: Runtime) -> dict[str, Any]:
    store = rt.store
    assert store is not None
    marks = os.environ[kit.MARKS_ENV]
    if store.find(RUN) is None:
        rt.spawn(FanOut, id="fan")
        rt.ref("fan").ask(Fan(N, 60.0), id=RUN)
        kit.eventually(
            lambda: len([m for m in kit.marks(marks) if m.name == "work"]) >= N,
            timeout=30,
            what="every worker working",
        )
        assert rt.cancel(RUN, reason="crash test")
        kill_after = os.environ.get("CANCEL_KILL_AFTER")
        if kill_after:
            threading.Timer(float(kill_after), _die).start()
    started = time.monotonic()
    kit.wait_quiet(store.dsn, RUN, 60)
    return {"seconds": time.monotonic() - started}
