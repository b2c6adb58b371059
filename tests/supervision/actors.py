"""Actors, supervisors and helpers of the supervision tests, importable by child processes.

Every class a supervisor starts or a child process resolves by kind
(``tests.supervision.actors:Worker``) lives here. A worker "crashes" when its handler raises
(``Crash``) and exits on purpose with ``ctx.stop`` (``Stop``); ``Busy`` keeps it in one long
message; ``Work`` keeps one step per message (an effect, counted across processes).

Gates and tallies are per process: a test opens a gate to let a blocked handler go on, and
reads what its own process ran.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from promissory.actors import (
    AutoShutdown,
    Backoff,
    ChildDef,
    ChildSpec,
    Context,
    DurableActor,
    Exit,
    Strategy,
    Supervisor,
    SupervisorRef,
    Terminated,
    child,
    current_step,
    handler,
)
from promissory.errors import ActorStoppedError, ChildFailedError, FencedError
from promissory.runtime import Runtime
from promissory.testing import effect
from tests.kit import (
    eventually as wait_until,  # noqa: F401 (imported from here)
    sql,
)

# -- per-process helpers -----------------------------------------------------------------------


class Tally:
    """Thread-safe counts, keyed by what a test chooses (a message or step id)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def hit(self, key: str) -> int:
        with self._lock:
            self.counts[key] += 1
            return self.counts[key]

    def clear(self) -> None:
        with self._lock:
            self.counts.clear()


TALLY = Tally()


class Events:
    """An ordered, thread-safe log of (event, actor id) pairs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[str, str]] = []

    def add(self, event: str, actor_id: str) -> None:
        with self._lock:
            self.items.append((event, actor_id))

    def of(self, event: str) -> list[str]:
        with self._lock:
            return [a for e, a in self.items if e == event]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()


EVENTS = Events()
FENCED: list[tuple[str, str]] = []
"""(actor id, message id) of every handler whose step write was refused as stale."""

_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def gate(name: str) -> threading.Event:
    """The process-local event ``name`` (created closed)."""
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


def reset_gates() -> None:
    with _gates_lock:
        for event in _gates.values():
            event.set()  # let any handler still blocked from an earlier test go
        _gates.clear()


def start(rt: Runtime, cls: type[Supervisor], id: str = "sup", **spec: Any) -> SupervisorRef:
    """Spawn a top-level supervisor (temporary, so an escalation ends it) and wait until it has
    started its static children (an ask queued behind its start message)."""
    spec.setdefault("restart", "temporary")
    ref = SupervisorRef(rt.spawn(cls, id=id, spec=ChildSpec(**spec)), timeout=15.0)
    ref.which_children()
    return ref


class Row(msgspec.Struct, frozen=True):
    """What the tests look at in an actor's row."""

    id: str
    parent: str | None
    status: str
    epoch: int
    restarts: int
    seq: int
    updated_at: float
    state: Any
    reason: Any


def actor(dsn_or_rt: str | Runtime, actor_id: str) -> Row | None:
    """The row of ``actor_id`` (``None`` if there is none)."""
    rows = actors(dsn_or_rt, actor_id)
    return rows[0] if rows else None


def actors(dsn_or_rt: str | Runtime, *ids: str, prefix: str | None = None) -> list[Row]:
    """Rows of the given actors, or of those whose id starts with ``prefix``, in seq order."""
    query = (
        "SELECT id, parent, status, epoch, restarts, seq, extract(epoch FROM updated_at)::float8,"
        " state, reason FROM actors WHERE "
    )
    if prefix is not None:
        query += "id LIKE %s ORDER BY seq"
        params: tuple[Any, ...] = (prefix.replace("_", "\\_") + "%",)
    else:
        query += "id = ANY(%s) ORDER BY seq"
        params = (list(ids),)

    def read(conn: Any) -> list[Any]:
        return list(conn.execute(query, params).fetchall())

    if isinstance(dsn_or_rt, Runtime):
        assert dsn_or_rt.store is not None
        rows = dsn_or_rt.store.read(read)
    else:
        rows = sql(dsn_or_rt, query, *params)
    return [Row(*r[:7], _json(r[7]), _json(r[8])) for r in rows]


def _json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return msgspec.json.decode(bytes(value))
    return value


def steps_of(rt: Runtime, message_id: str) -> list[Any]:
    """The values of the steps kept for a message, in the order they were kept."""
    assert rt.store is not None
    rows = rt.store.read(
        lambda conn: conn.execute(
            "SELECT value FROM promises WHERE id LIKE %s AND kind = 'step' ORDER BY seq",
            (message_id.replace("_", "\\_") + "/%",),
        ).fetchall()
    )
    return [_json(r[0]) for r in rows]


def status(rt: Runtime | str, actor_id: str) -> str | None:
    row = actor(rt, actor_id)
    return row.status if row is not None else None


# -- messages ----------------------------------------------------------------------------------


class Boom(Exception):
    """What a crashing handler raises."""


class Crash(msgspec.Struct):
    """Crash on the first ``times`` tries of this message (durably: each try keeps a step),
    then answer ``survived``; the restarted incarnation handles the message again."""

    reason: str = "boom"
    times: int = 1


class Poison(msgspec.Struct):
    """Crash on every try."""

    reason: str = "poison"


class Stop(msgspec.Struct):
    exit: str = "normal"


class Ping(msgspec.Struct):
    pass


class Pong(msgspec.Struct):
    id: str
    epoch: int
    handled: list[str]


class Work(msgspec.Struct):
    key: str


class Busy(msgspec.Struct):
    key: str
    seconds: float


class Hold(msgspec.Struct):
    """Block (on the process-local gate ``gate``) between two steps, the first time only."""

    key: str
    gate: str


class Started(msgspec.Struct):
    pass


class Slow(msgspec.Struct):
    """Keep a step, then (in a process with ``$SUP_BLOCK`` set) block for a minute, then keep
    another: a crash test kills the process while workers are stuck in it."""

    key: str


class Log(msgspec.Struct):
    handled: list[str] = []


# -- workers -----------------------------------------------------------------------------------


def did(key: str) -> str:
    """A step's effect: counted in this process, and across processes in a crash test."""
    step = current_step()
    assert step is not None
    TALLY.hit(f"{key}")
    effect("did", key)
    return key


class Worker(DurableActor[Log]):
    """A child that answers, works, crashes, stops and stays busy on demand. Each activation
    logs its end (``EVENTS``, "stop")."""

    def on_stop(self) -> None:
        EVENTS.add("stop", self.id)

    @handler
    def ping(self, ctx: Context, msg: Ping) -> Pong:
        assert self._activation.fence is not None
        return Pong(self.id, self._activation.fence.epoch, list(self.state.handled))

    @handler
    def crash(self, ctx: Context, msg: Crash) -> str:
        for i in range(msg.times):
            fresh: list[int] = []
            ctx.step(fresh.append, i, name=f"try{i}")
            if fresh:
                raise Boom(msg.reason)
        return "survived"

    @handler
    def poison(self, ctx: Context, msg: Poison) -> None:
        raise Boom(msg.reason)

    @handler
    def stop_now(self, ctx: Context, msg: Stop) -> str:
        ctx.stop(Exit(msg.exit), "asked to stop")
        return "stopping"

    @handler
    def work(self, ctx: Context, msg: Work) -> list[str]:
        ctx.step(did, msg.key)
        self.state = Log([*self.state.handled, msg.key])
        return self.state.handled

    @handler
    def busy(self, ctx: Context, msg: Busy) -> str:
        ctx.step(did, f"{msg.key}:begin")
        if TALLY.hit(f"busy:{ctx.message_id}") == 1:
            time.sleep(msg.seconds)
        try:
            ctx.step(did, f"{msg.key}:end")
        except FencedError:
            FENCED.append((self.id, ctx.message_id))
            raise
        self.state = Log([*self.state.handled, msg.key])
        return "done"

    @handler
    def hold(self, ctx: Context, msg: Hold) -> str:
        ctx.step(did, f"{msg.key}:before")
        if TALLY.hit(f"hold:{ctx.message_id}") == 1:
            gate(msg.gate).wait(20)
            EVENTS.add("woke", self.id)
        try:
            ctx.step(did, f"{msg.key}:after")
        except FencedError:
            FENCED.append((self.id, ctx.message_id))
            raise
        self.state = Log([*self.state.handled, msg.key])
        return "held"

    @handler
    def slow(self, ctx: Context, msg: Slow) -> list[str]:
        ctx.step(did, f"{msg.key}:before")
        if env_flag("SUP_BLOCK"):
            time.sleep(60)
        ctx.step(did, msg.key)
        self.state = Log([*self.state.handled, msg.key])
        return self.state.handled


FAILING: set[str] = set()
"""Ids of ``FailingStart`` actors whose start fails now (OTP's ``supervisor_deadlock`` flag)."""


class FailingStart(Worker):
    """A child whose start fails while its id is in ``FAILING``."""

    @classmethod
    def start_message(cls) -> Any:
        return Started()

    @handler
    def started(self, ctx: Context, msg: Started) -> None:
        TALLY.hit(f"start:{self.id}")
        if self.id in FAILING:
            raise Boom("cannot start")


class FailsOnRestart(Worker):
    """Starts the first time; every restart fails (OTP's ``supervisor_1:start_child(error)``)."""

    @classmethod
    def start_message(cls) -> Any:
        return Started()

    @handler
    def started(self, ctx: Context, msg: Started) -> None:
        record = self._activation.record
        assert record is not None
        if record.restarts > 0:
            TALLY.hit(f"start-failed:{self.id}")
            raise Boom("cannot restart")


class StartLogged(Worker):
    """A child that is sent ``Started`` at every (re)start; its activations log their end."""

    @classmethod
    def start_message(cls) -> Any:
        return Started()

    @handler
    def started(self, ctx: Context, msg: Started) -> None:
        EVENTS.add("start", self.id)


# -- supervisors -------------------------------------------------------------------------------


class OneForOne(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id=f"c{i}") for i in (1, 2, 3)]


class OneChild(Supervisor):
    """OTP's ``child_adm`` supervisor: one_for_one, 2 in 3600 s, one permanent child."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1")]


class Empty(Supervisor):
    """A one_for_one supervisor with no static children (OTP's ``{one_for_one, 2, 3600}``)."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 2, 3600.0


class OneForOneEscalation(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 4, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(FailsOnRestart, id="c1"), child(Worker, id="c2")]


class OneForAll(Supervisor):
    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1"), child(Worker, id="c2")]


class OneForAllEscalation(Supervisor):
    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 4, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1"), child(FailsOnRestart, id="c2")]


class RestForOne(Supervisor):
    strategy = Strategy.REST_FOR_ONE
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id=f"c{i}") for i in (1, 2, 3)]


class RestForOneEscalation(Supervisor):
    strategy = Strategy.REST_FOR_ONE
    intensity, period = 4, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1"), child(FailsOnRestart, id="c2")]


class AllBystander(Supervisor):
    """one_for_all, intensity 1: a permanent child and a temporary one."""

    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 1, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1"), child(Worker, id="c2", restart="temporary")]


class RestBystander(AllBystander):
    """rest_for_one, intensity 1: a permanent child and a temporary one after it."""

    strategy = Strategy.REST_FOR_ONE


class Pool(Supervisor):
    """A pool of ``Worker``s (OTP's simple_one_for_one: one child spec, members by id)."""

    strategy = Strategy.SIMPLE_ONE_FOR_ONE
    intensity, period = 2, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="worker", restart="permanent")]


class RestartFailingPool(Pool):
    """A pool whose members' restarts fail."""

    def children(self) -> Sequence[ChildDef]:
        return [child(FailsOnRestart, id="worker")]


class SupervisorPool(Pool):
    """A pool whose members are (empty) supervisors."""

    def children(self) -> Sequence[ChildDef]:
        return [child(Empty, id="sup", shutdown=None)]


class BadPool(Pool):
    """simple_one_for_one with two child specs: refused at start, as OTP refuses it."""

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="a"), child(Worker, id="b")]


class Windowed(Supervisor):
    """Intensity 1 in 0.3 s: crashes spaced further apart never add up."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 1, 0.3

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1")]


class HangingLoop(Supervisor):
    """A child whose restarts can fail, restarted with a backoff (OTP: 8 in 10 s)."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="ok"),
            child(FailingStart, id="bad", backoff=Backoff(min=0.25, max=0.25, jitter=0.0)),
        ]


class Ordered(Supervisor):
    """Five logged children, rest_for_one (OTP's ``order_of_children``)."""

    strategy = Strategy.REST_FOR_ONE
    intensity, period = 1, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(StartLogged, id=f"c{i}") for i in range(1, 6)]


class ShutdownSup(Supervisor):
    """Children with each shutdown: brutal kill, a short timeout, a long one, infinity."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="brutal", shutdown=0),
            child(Worker, id="short", shutdown=0.3),
            child(Worker, id="long", shutdown=5.0),
            child(Worker, id="infinity", shutdown=None),
        ]


class AnySignificant(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0
    auto_shutdown = AutoShutdown.ANY_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="sig_temp", restart="temporary", significant=True),
            child(Worker, id="sig_trans", restart="transient", significant=True),
            child(Worker, id="plain_temp", restart="temporary"),
            child(Worker, id="plain_trans", restart="transient"),
            child(Worker, id="perm"),
        ]


class AllSignificant(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0
    auto_shutdown = AutoShutdown.ALL_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="s1", restart="transient", significant=True),
            child(Worker, id="s2", restart="temporary", significant=True),
            child(Worker, id="perm"),
        ]


class BystanderSup(Supervisor):
    """one_for_all with a significant transient child and a worker that crashes."""

    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 5, 3600.0
    auto_shutdown = AutoShutdown.ANY_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Worker, id="sig", restart="transient", significant=True),
            child(Worker, id="crasher"),
        ]


class SignificantInner(Supervisor):
    """A child supervisor that shuts itself down when its significant child ends."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0
    auto_shutdown = AutoShutdown.ANY_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="task", restart="transient", significant=True)]


class SignificantOuter(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0
    auto_shutdown = AutoShutdown.ANY_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [
            child(SignificantInner, id="inner", restart="transient", significant=True),
            child(Worker, id="other"),
        ]


class Leaf(Supervisor):
    """OTP ``tree``'s supchild1: one_for_one, 4 in 3600 s, two static workers."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 4, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w1"), child(Worker, id="w2")]


class DynamicLeaf(Supervisor):
    """OTP ``tree``'s supchild2: one_for_one, 4 in 3600 s, dynamic children only."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 4, 3600.0


class Tree(Supervisor):
    """OTP's ``tree``: one_for_all, 4 in 3600 s, over two child supervisors."""

    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 4, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [
            child(Leaf, id="sup1", shutdown=None),
            child(DynamicLeaf, id="sup2", shutdown=None),
        ]


class Backoffs(Supervisor):
    """A child with a backoff long enough to send it messages while it waits."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="slow", backoff=Backoff(min=0.6, max=0.6, jitter=0.0))]


class InFlight(Supervisor):
    """one_for_all: when ``c1`` fails, ``c2`` is bounced mid-message after 0.2 s."""

    strategy = Strategy.ONE_FOR_ALL
    intensity, period = 5, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c1"), child(Worker, id="c2", shutdown=0.2)]


# -- for the crash tests (tests.supervision.scenarios) -------------------------------------------


class CrashLoop(Supervisor):
    """one_for_one, intensity 3 in an hour: the fourth restart escalates."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c")]


class Team(Supervisor):
    """The middle of a three-level tree: two workers."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w1"), child(Worker, id="w2")]


class Org(Supervisor):
    """The top of a three-level tree: two teams."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Team, id="t1", shutdown=None), child(Team, id="t2", shutdown=None)]


class LongBackoff(Supervisor):
    """A child that waits 1.5 s before each restart."""

    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 3, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="slow", backoff=Backoff(min=1.5, max=1.5, jitter=0.0))]


# -- plain parents and watchers ----------------------------------------------------------------


class Seen(msgspec.Struct):
    downs: list[dict[str, Any]] = []
    results: list[Any] = []


class Watch(msgspec.Struct):
    target: str


class Watcher(DurableActor[Seen]):
    """Watches actors and keeps every ``Terminated`` it is sent, in order."""

    @handler
    def watch(self, ctx: Context, msg: Watch) -> str:
        ctx.watch(msg.target)
        return "watching"

    @handler
    def terminated(self, ctx: Context, msg: Terminated) -> None:
        down = {
            "actor": msg.actor,
            "exit": msg.exit.value,
            "error": msg.error.type if msg.error is not None else None,
        }
        self.state = Seen([*self.state.downs, down], self.state.results)

    @handler
    def ping(self, ctx: Context, msg: Ping) -> Seen:
        return self.state


class SpawnChild(msgspec.Struct):
    id: str
    spec: dict[str, Any] = {}


class CallChild(msgspec.Struct):
    id: str
    action: str = "work"
    """``work``, ``crash`` (once) or ``poison`` (every time)."""
    key: str = ""


def child_message(action: str, key: str) -> Any:
    return {"work": Work(key), "crash": Crash(key), "poison": Poison(key)}[action]


class FanOut(msgspec.Struct):
    ids: list[str]
    failing: str


class Parent(DurableActor[Seen]):
    """A plain actor (not a Supervisor) that spawns children and calls them."""

    @handler
    def spawn(self, ctx: Context, msg: SpawnChild) -> str:
        return ctx.spawn(Worker, id=msg.id, spec=msg.spec).id

    @handler
    def call(self, ctx: Context, msg: CallChild) -> dict[str, Any]:
        try:
            value = ctx.call(msg.id, child_message(msg.action, msg.key))
        except ChildFailedError as exc:
            out = {
                "failed": exc.child_id,
                "cause": type(exc.cause).__name__,
                "cause_args": list(exc.cause.args) if exc.cause is not None else None,
                "dunder_cause_is_cause": exc.__cause__ is exc.cause,
            }
        except ActorStoppedError:
            out = {"stopped": msg.id}
        else:
            out = {"value": value}
        self.state = Seen(self.state.downs, [*self.state.results, out])
        return out

    @handler
    def fan_out(self, ctx: Context, msg: FanOut) -> dict[str, Any]:
        for child_id in msg.ids:
            ctx.spawn(Worker, id=child_id)
        calls = [
            ctx.start_call(c, Poison("fan-out") if c == msg.failing else Slow(c)) for c in msg.ids
        ]
        out: dict[str, Any] = {}
        for child_id, call in zip(msg.ids, calls, strict=True):
            try:
                out[child_id] = call.result()
            except ChildFailedError as exc:
                out[child_id] = f"ChildFailedError({type(exc.cause).__name__})"
        self.state = Seen(self.state.downs, [*self.state.results, out])
        return out

    @handler
    def ping(self, ctx: Context, msg: Ping) -> Seen:
        return self.state


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class SignificantPool(Pool):
    """simple_one_for_one with a significant child spec: refused (OTP: bad_combination)."""

    auto_shutdown = AutoShutdown.ANY_SIGNIFICANT

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="w", restart="transient", significant=True)]
