"""Helpers and actors shared by the actor and runtime tests, importable by child processes.

Actor classes that a child process must resolve by kind (``tests.actors.kit:Echo``) live here;
the rest of the tests define theirs at module level next to the tests that use them.
Counters are per process: a test reads what its own process ran.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, defaultdict
from typing import Any

import msgspec

from promissory.actors import Context, DurableActor, current_step, handler
from promissory.testing import effect
from tests.kit import eventually, python, sql  # noqa: F401 (the package's tests import them here)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The project's root, the working directory of child processes."""


class Tally:
    """Thread-safe counts and logs, keyed by whatever a test chooses (a message or step id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.logs: defaultdict[str, list[Any]] = defaultdict(list)

    def hit(self, key: str) -> int:
        with self._lock:
            self.counts[key] += 1
            return self.counts[key]

    def log(self, key: str, value: Any) -> None:
        with self._lock:
            self.logs[key].append(value)

    def clear(self) -> None:
        with self._lock:
            self.counts.clear()
            self.logs.clear()


TALLY = Tally()


def one(dsn: str, query: str, *params: Any) -> Any:
    """The single value ``query`` returns."""
    rows = sql(dsn, query, *params)
    assert len(rows) == 1, f"{query!r} returned {rows!r}"
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


# -- messages ----------------------------------------------------------------------------------


class Ping(msgspec.Struct):
    text: str = ""


class Pong(msgspec.Struct):
    text: str
    pid: int
    node: str


class Nap(msgspec.Struct):
    seconds: float


class Item(msgspec.Struct):
    n: int


class Items(msgspec.Struct):
    items: list[int] = []


# -- actors ------------------------------------------------------------------------------------


class Echo(DurableActor):
    """Answers where it ran: the process and the node that hosted the activation."""

    @handler
    def ping(self, ctx: Context, msg: Ping) -> Pong:
        return Pong(msg.text, os.getpid(), self._activation.host.node_id)


class Sleeper(DurableActor[Items]):
    """Sleeps durably, then keeps one step that counts as an effect."""

    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        ctx.sleep(msg.seconds)
        return ctx.step(woke, ctx.message_id)


def woke(message_id: str) -> str:
    TALLY.hit(f"woke:{message_id}")
    effect("woke", message_id)
    return f"woke {message_id}"


class Appender(DurableActor[Items]):
    """Appends each item to its state with one step per message; the step is an effect."""

    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        ctx.step(handled, msg.n)
        self.state = Items([*self.state.items, msg.n])
        return self.state.items


def handled(n: int) -> int:
    step = current_step()
    assert step is not None
    TALLY.hit(f"handled:{step.id}")
    effect("handled", step.id)
    return n


def clean_run(server_dsn: str, scenario: str, workdir: Any) -> dict[str, Any]:
    """The outcome and effects of ``scenario`` run once without crashes, on a fresh schema:
    what a crash test's runs are compared with (each effect ran exactly once)."""
    from promissory.testing import CrashTest, fresh_schema

    with fresh_schema(server_dsn) as dsn:
        test = CrashTest(dsn, scenario, workdir=workdir)
        run = test.run()
        assert not run.killed
        assert set(test.effects().values()) == {1}
        return {"outcome": run.outcome, "effects": set(test.effects())}
