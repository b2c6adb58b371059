"""Helpers every test package shares: waiting for a state nothing signals, running Python in a
child process, SQL on a connection of the test's own, and a scripted model that records.

The package's own helpers are used where it has them: ``promissory.testing`` gives the
fixtures (its pytest plugin), ``fresh_schema`` and ``kept_steps``.
"""

from __future__ import annotations

import collections
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from promissory.actors import current_step
from promissory.agents import ModelRequest, ModelResponse, ScriptedModel
from promissory.testing import kept_steps as kept_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository's root."""


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (for states nothing signals)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or check}")
        time.sleep(0.01)


def python(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``python args…`` in the repository's root; return its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def sql(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``query`` on a connection of its own (not the runtime's) and return the rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


Record = Callable[[str, int, str, ModelRequest], Any]
"""``record(agent, turn, step id, request)``: told of a model call before it is answered; a
coroutine function is awaited (so it can hold the answer back)."""


class RecordingModel:
    """A scripted model that tells ``record`` of each request, then answers from its script.

    ``turn`` is which answer is asked for (1 for the first), and the step id is the model
    step's (its idempotency key): a test can tell a replayed call from a new one.
    """

    def __init__(self, agent: str, script: Sequence[Any], record: Record, *, name: str) -> None:
        self.agent = agent
        self.name = name
        self.inner = ScriptedModel(list(script), name=agent)
        self._record = record

    async def complete(self, request: ModelRequest) -> ModelResponse:
        step = current_step()
        assert step is not None, "a model is called inside its step"
        turn = sum(1 for m in request.messages if m.role == "assistant") + 1
        told = self._record(self.agent, turn, step.id, request)
        if inspect.isawaitable(told):
            await told
        return await self.inner.complete(request)


def time_passes(dsn: str, seconds: float) -> None:
    """A fake clock for a store no runtime runs on: as if ``seconds`` passed, every time the
    store keeps moves that much into the past by the database's clock (when promises and
    actors were made and settled, their timeouts, a step's next attempt, an actor's restart
    time and restart history), so whatever was due within ``seconds`` is overdue.

    Tests use it instead of sleeping while a timer or a deadline comes due with nothing
    running; the next runtime to start finds what is overdue. (A running node would see the
    change only at its timer service's next look; supervisors' own windows, kept in their
    state, do not move.) Schedules' next firings move too, so what was due is missed.
    """
    i = "make_interval(secs => %(s)s)"
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(
            f"UPDATE promises SET created_at = created_at - {i}, settled_at = settled_at - {i}, "
            f"timeout_at = timeout_at - {i}, next_attempt_at = next_attempt_at - {i}",
            {"s": seconds},
        )
        conn.execute(
            f"UPDATE actors SET created_at = created_at - {i}, updated_at = updated_at - {i}, "
            f"restart_at = restart_at - {i}, history = coalesce((SELECT jsonb_agg("
            "to_jsonb((h #>> '{}')::float8 - %(s)s) ORDER BY n) "
            "FROM jsonb_array_elements(history) WITH ORDINALITY AS e(h, n)), '[]'::jsonb)",
            {"s": seconds},
        )
        conn.execute(
            f"UPDATE schedules SET next_at = next_at - {i}, last_at = last_at - {i}",
            {"s": seconds},
        )


def count_calls(
    monkeypatch: Any, obj: Any, names: Sequence[str], when: Callable[..., bool] | None = None
) -> collections.Counter[str]:
    """Count the calls of ``obj``'s methods ``names`` for the rest of the test (with ``when``,
    those for which ``when(*args, **kwargs)`` is true): a figure counted by call, not by
    ``Store.reads``, which the node's periodic rescan of the fleet may add to meanwhile.
    """
    calls = collections.Counter[str]()
    for name in names:
        real = getattr(obj, name)

        def counted(*a: Any, _n: str = name, _r: Any = real, **k: Any) -> Any:
            if when is None or when(*a, **k):
                calls.update([_n])
            return _r(*a, **k)

        monkeypatch.setattr(obj, name, counted)
    return calls
