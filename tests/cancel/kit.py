"""Agents, actors and helpers of the cancellation tests, importable by child processes.

Every model call, tool call and cleanup records a *mark*: its name, a key (the step id, or the
agent and turn), and the wall-clock time it started. Marks go to a per-process list, and, when
``$CANCEL_MARKS`` names a file, to that file too (one appended line each: a line survives the
writer's SIGKILL), so a test compares when work started with the ``settled_at`` of the
cancel, in the same clock (one machine).

The agent trees: ``lead_K`` calls ``sub_K`` (``as_tool``), which calls ``leaf_K``, whose first
turn calls the tool ``K`` (one per kind): a sync tool blocked on a gate, an async tool that
sleeps, a durable tool that sleeps on a durable timer, a durable tool that waits on a
person's approval. Each model answers from a script (turn 1: the call; turn 2: a final text).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import msgspec
import msgspec.structs

from promissory.actors import (
    Canceled,
    ChildDef,
    ChildSpec,
    Context,
    DurableActor,
    Exit,
    Restart,
    RetryPolicy,
    Supervisor,
    child,
    current_step,
    handler,
)
from promissory.agents import (
    Agent,
    ModelRequest,
    call,
    reply,
)
from promissory.errors import ChildCanceledError, ChildFailedError, StepTimedOutError
from promissory.runtime import Runtime
from tests.kit import RecordingModel, eventually, python, sql, time_passes as kit_time_passes  # noqa: F401 (tests import them here)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The project's root, the working directory of child processes."""

MARKS_ENV = "CANCEL_MARKS"

# -- marks -------------------------------------------------------------------------------------


class Mark(msgspec.Struct, frozen=True):
    name: str
    key: str
    at: float
    pid: int

    @property
    def step(self) -> str:
        """The step id in the key (``…|{step id}``, or the key itself)."""
        return self.key.rsplit("|", 1)[-1]

    @property
    def what(self) -> str:
        """The key without its step id (a model mark's ``{agent}:{turn}``)."""
        return self.key.rsplit("|", 1)[0]


_lock = threading.Lock()
MARKS: list[Mark] = []


def mark(name: str, key: str = "") -> None:
    """Record that ``name`` started for ``key``, now."""
    m = Mark(name, key, time.time(), os.getpid())
    with _lock:
        MARKS.append(m)
    path = os.environ.get(MARKS_ENV)
    if path:
        line = msgspec.json.encode(m) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def marks(path: str | None = None) -> list[Mark]:
    """The marks of this process, or those in the file ``path`` (every process's)."""
    if path is None:
        with _lock:
            return list(MARKS)
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [msgspec.json.decode(line, type=Mark) for line in f if line.strip()]


def time_passes(dsn: str, seconds: float) -> None:
    """The fake clock (``tests.kit.time_passes``) for these tests: the store's times and this
    process's marks move ``seconds`` into the past together."""
    kit_time_passes(dsn, seconds)
    with _lock:
        MARKS[:] = [msgspec.structs.replace(m, at=m.at - seconds) for m in MARKS]


def step_id() -> str:
    step = current_step()
    assert step is not None, "marks with a step id are made inside steps only"
    return step.id


# -- gates (per process) -------------------------------------------------------------------------

_gates: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    with _lock:
        return _gates.setdefault(name, threading.Event())


def reset() -> None:
    """Open every gate (a handler still blocked must not hold up a close) and forget marks."""
    with _lock:
        for event in _gates.values():
            event.set()
        _gates.clear()
        MARKS.clear()
        ASYNC_CANCELLED.clear()


ASYNC_CANCELLED: list[str] = []
"""Step ids of async tools whose task saw ``CancelledError``."""

# -- models ------------------------------------------------------------------------------------


def _mark(agent: str, turn: int, step: str, request: ModelRequest) -> None:
    mark("model", f"{agent}:{turn}|{step}")


def marked(agent: str, script: list[Any]) -> RecordingModel:
    """A scripted model that marks each call ``model``, keyed ``{agent}:{turn}|{step id}``."""
    return RecordingModel(agent, script, _mark, name=f"marked:{agent}")


# -- tools -------------------------------------------------------------------------------------


def blocking(topic: str) -> str:
    """A sync tool that waits for the gate ``sync`` (or 30 s).

    Args:
        topic: what to look up.
    """
    mark("tool:blocking", step_id())
    gate("sync").wait(30)
    mark("tool:blocking:done", step_id())
    return f"notes on {topic}"


async def sleepy(seconds: float) -> str:
    """An async tool that sleeps.

    Args:
        seconds: how long.
    """
    sid = step_id()
    mark("tool:sleepy", sid)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark("tool:sleepy:cancelled", sid)
        with _lock:
            ASYNC_CANCELLED.append(sid)
        raise
    mark("tool:sleepy:done", sid)
    return f"slept {seconds}"


def cleanup(what: str) -> str:
    """A cleanup step's function."""
    mark("cleanup", what)
    return f"cleaned up {what}"


def after(what: str) -> str:
    mark("after", what)
    return what


def wait_timer(ctx: Context, seconds: float) -> str:
    """A durable tool that sleeps on a durable timer, then keeps a step.

    Args:
        seconds: how long.
    """
    try:
        ctx.sleep(seconds)
        return ctx.step(after, "timer", name="after")
    except Canceled:
        ctx.step(cleanup, f"timer:{ctx.message_id}", name="cleanup")
        raise


def approval(ctx: Context, action: str) -> str:
    """A durable tool that waits on a person's approval (a promise under the run).

    Args:
        action: what is to be approved.
    """
    try:
        decision = ctx.promise(param={"action": action}).result(dict)
        ctx.step(after, "approval", name="after")
        return "approved" if decision.get("approved") else "refused"
    except Canceled:
        ctx.step(cleanup, f"approval:{ctx.message_id}", name="cleanup")
        raise


LEAF_CALLS: dict[str, tuple[list[Any], list[Any]]] = {
    "sync": ([blocking], [call("blocking", "c-leaf", topic="postgres")]),
    "async": ([sleepy], [call("sleepy", "c-leaf", seconds=30.0)]),
    "async2": (
        [sleepy],
        [call("sleepy", "c-leaf-1", seconds=30.0), call("sleepy", "c-leaf-2", seconds=31.0)],
    ),
    "timer": ([wait_timer], [call("wait_timer", "c-leaf", seconds=60.0)]),
    "approval": ([approval], [call("approval", "c-leaf", action="deploy")]),
}
"""Per kind of tree: the leaf's tools, and the calls of its first turn."""


def tree(kind: str) -> Agent:
    """The three-level tree whose leaf calls the ``kind`` tools (see the module docstring)."""
    tools, calls = LEAF_CALLS[kind]
    leaf = Agent(
        f"leaf_{kind}",
        "Use the tool.",
        marked(f"leaf_{kind}", [reply("", *calls), "leaf done"]),
        tools=tools,
    )
    sub = Agent(
        f"sub_{kind}",
        "Delegate to the leaf.",
        marked(f"sub_{kind}", [reply("", call("leaf", "c-sub", input="go")), "sub done"]),
        tools=[leaf.as_tool(name="leaf")],
    )
    return Agent(
        f"lead_{kind}",
        "Delegate to the sub-agent.",
        marked(f"lead_{kind}", [reply("", call("sub", "c-lead", input="go")), "lead done"]),
        tools=[sub.as_tool(name="sub")],
    )


TREES = {kind: tree(kind) for kind in LEAF_CALLS}


# -- SQL and waiting ---------------------------------------------------------------------------


def under(run: str) -> tuple[str, str]:
    """The ``WHERE`` clause (and its parameters) of a run and every promise under it."""
    return run, run + "/%"


UNDER = "(id = %s OR id LIKE %s)"


# -- plain actors --------------------------------------------------------------------------------


class Job(msgspec.Struct, frozen=True):
    n: int
    seconds: float = 30.0


class Worker(DurableActor[None]):
    """Works on a job with one long async step; cleans up (a kept step) when canceled."""

    @handler
    def work(self, ctx: Context, job: Job) -> str:
        try:
            ctx.step(pause, job.seconds, name="work")
            return ctx.step(after, f"{ctx.actor_id}", name="after")
        except Canceled:
            ctx.step(cleanup, ctx.message_id, name="cleanup")
            raise


async def pause(seconds: float) -> float:
    mark("work", step_id())
    await asyncio.sleep(seconds)
    return seconds


# -- what the store holds under a run -----------------------------------------------------------


class Row(msgspec.Struct, frozen=True):
    """A promise under a run, as the checks read it (times as epoch seconds)."""

    id: str
    kind: str
    state: str
    fingerprint: str | None
    recipient: str | None
    created: float
    settled: float | None
    marked: bool
    value: Any

    @property
    def label(self) -> str:
        """A step's name (``step:NAME:hash``), else its fingerprint (``sleep``, ``call:…``)."""
        fp = self.fingerprint or ""
        if fp.startswith("step:"):
            return fp.removeprefix("step:").rsplit(":", 1)[0]
        return fp


def rows(dsn: str, run: str) -> list[Row]:
    """The run's promise and every promise under it, in the order they were created."""
    found = sql(
        dsn,
        "SELECT id, kind, state, fingerprint, recipient, extract(epoch FROM created_at)::float8,"
        " extract(epoch FROM settled_at)::float8, awaiting IS NOT NULL, value FROM promises"
        f" WHERE {UNDER} ORDER BY seq",
        *under(run),
    )
    return [Row(*r) for r in found]


def settled_at(dsn: str, id: str) -> float:
    """When ``id`` was settled (epoch seconds); it must be."""
    [(at,)] = sql(
        dsn, "SELECT extract(epoch FROM settled_at)::float8 FROM promises WHERE id = %s", id
    )
    assert at is not None, f"{id} is not settled"
    return float(at)


def quiet(dsn: str, run: str, marks: bool = True) -> list[str]:
    """What is still unfinished under ``run``: pending promises, actors still running, and
    (with ``marks``) canceled messages whose cleanup replay has not run (still marked).
    """
    found = rows(dsn, run)
    left = [f"pending {r.id}" for r in found if r.state == "pending"]
    if marks:
        left += [f"marked {r.id}" for r in found if r.state != "pending" and r.marked]
    left += [
        f"running actor {a}"
        for (a,) in sql(
            dsn, f"SELECT id FROM actors WHERE {UNDER} AND status = 'running'", *under(run)
        )
    ]
    return left


def wait_quiet(dsn: str, run: str, timeout: float = 15.0, marks: bool = True) -> None:
    """Wait until nothing is left unfinished under ``run`` (see ``quiet``)."""
    deadline = time.monotonic() + timeout
    while True:
        left = quiet(dsn, run, marks)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"still unfinished under {run} after {timeout} s: {left}")
        time.sleep(0.02)


def started_after(all_marks: list[Mark], at: float, run: str | None = None) -> list[Mark]:
    """Marks of work (under ``run``) that started after ``at`` (a cleanup is not work)."""
    return [
        m
        for m in all_marks
        if m.at > at
        and (m.name in ("model", "work", "after") or m.name.startswith("tool:"))
        and not m.name.endswith((":done", ":cancelled"))
        and (run is None or m.step.startswith(run + "/"))
    ]


def cancel(how: str, dsn: str, rt: Runtime | None, id: str, reason: str) -> None:
    """Cancel ``id``: with ``rt.cancel``, ``promissory cancel`` (another process), ``Store.cancel``
    in another process, or plain SQL on a connection of the test's own.
    """
    if how == "rt":
        assert rt is not None
        assert rt.cancel(id, reason=reason)
    elif how == "cli":
        out = python("-m", "promissory", "--dsn", dsn, "cancel", id, "--reason", reason)
        assert out.strip() == f"{id}: canceled"
    elif how == "store":
        code = (
            "import sys; from promissory.store import Store\n"
            "with Store(sys.argv[1]) as s: print(s.cancel(sys.argv[2], sys.argv[3]).applied)"
        )
        assert python("-c", code, dsn, id, reason).strip() == "True"
    elif how == "sql":
        done = sql(
            dsn,
            "UPDATE promises SET state = 'rejected_canceled', settled_at = clock_timestamp(),"
            " value = jsonb_build_object('type', 'promissory.errors.PromiseCanceledError',"
            " 'message', %s::text, 'args', jsonb_build_array(%s::text, %s::text))"
            " WHERE id = %s AND state = 'pending' RETURNING id",
            reason,
            reason,
            id,
            id,
        )
        assert done == [(id,)]
    else:
        raise ValueError(how)


# -- runs to resume --------------------------------------------------------------------------

RECORDED: list[tuple[str, ModelRequest]] = []
"""(step id, request) of every call of a ``recorded`` model in this process."""
HOLD: dict[str, tuple[str, int]] = {}
"""run id → (``model`` or ``tool``, turn): that run's model call, or slow tool call, of that
turn waits (for 30 s, or until it is cancelled)."""


def run_of(step: str) -> str:
    """The run (message) a step belongs to."""
    return step.rsplit("/", 1)[0]


async def _held(run: str, what: str, turn: int) -> None:
    if HOLD.get(run) == (what, turn):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            mark(f"{what}:cancelled", f"{run}:{turn}")
            raise


async def _record(agent: str, turn: int, step: str, request: ModelRequest) -> None:
    mark("model", f"{agent}:{turn}|{step}")
    with _lock:
        RECORDED.append((step, request))
    await _held(run_of(step), "model", turn)


def recorded(agent: str, script: list[Any]) -> RecordingModel:
    """A scripted model that marks and records each request, and waits where ``HOLD`` says."""
    return RecordingModel(agent, script, _record, name=f"recorded:{agent}")


def requests_of(run: str) -> list[ModelRequest]:
    """The requests the models were sent by ``run`` (its own model steps), in order."""
    with _lock:
        return [r for sid, r in RECORDED if run_of(sid) == run]


def quick(topic: str) -> str:
    """Look a topic up, at once.

    Args:
        topic: what to look up.
    """
    mark("tool:quick", step_id())
    return f"notes on {topic}"


async def slow(n: int) -> int:
    """Double a number (slowly, where ``HOLD`` says so).

    Args:
        n: the number.
    """
    sid = step_id()
    mark("tool:slow", sid)
    await _held(run_of(sid), "tool", n)
    return 2 * n


RESUMER = Agent(
    "resumer",
    "Look things up, then answer.",
    recorded(
        "resumer",
        [
            reply("", call("quick", "a1", topic="a"), call("slow", "a2", n=1)),
            reply("", call("quick", "b1", topic="b"), call("slow", "b2", n=2)),
            reply("", call("quick", "c1", topic="c")),
            "a, b and c: 2 and 4",
        ],
    ),
    tools=[quick, slow],
)
"""Four turns; each tool turn runs a sync and an async tool together (but the third)."""


def nap(ctx: Context, n: int) -> str:
    """Sleep on a durable timer (for a minute where ``HOLD`` says so, else briefly).

    Args:
        n: which nap.
    """
    try:
        ctx.sleep(60 if HOLD.get(ctx.message_id) == ("timer", n) else 0.05)
        return ctx.step(after, f"nap {n}", name="after")
    except Canceled:
        ctx.step(cleanup, f"nap {n} of {ctx.message_id}", name="cleanup")
        raise


NAPPER = Agent(
    "napper",
    "Look up, nap, answer.",
    recorded(
        "napper",
        [reply("", call("quick", "a1", topic="a")), reply("", call("nap", "b1", n=2)), "rested"],
    ),
    tools=[quick, nap],
)
"""Three turns: a plain tool, a durable tool that naps on a timer, the answer."""


# -- parents, children, supervisors -----------------------------------------------------------


class Nap(msgspec.Struct, frozen=True):
    """Sleep on a durable timer (the handler suspends: no thread waits)."""

    seconds: float = 30.0


class Delegate(msgspec.Struct, frozen=True):
    """Spawn the child ``child`` (with ``restart``) and ask it ``job`` (or to nap, or to crash)."""

    child: str
    job: Job | None = None
    nap: Nap | None = None
    crash: bool = False
    restart: str = "transient"
    timeout: float | None = None


class Crash(msgspec.Struct, frozen=True):
    pass


class Stop(msgspec.Struct, frozen=True):
    """Work like ``Job``; when canceled, clean up and end the actor (as an agent run does)."""

    seconds: float = 30.0


class Child(DurableActor[None]):
    """Works (``Job``), crashes (``Crash``), or works and stops when canceled (``Stop``)."""

    @handler
    def work(self, ctx: Context, job: Job) -> str:
        try:
            ctx.step(pause, job.seconds, name="work")
            return ctx.step(after, ctx.actor_id, name="after")
        except Canceled:
            ctx.step(cleanup, ctx.message_id, name="cleanup")
            raise

    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        try:
            ctx.sleep(msg.seconds)
            return ctx.step(after, ctx.actor_id, name="after")
        except Canceled as exc:
            mark("cancelled", f"{ctx.message_id} deadline={exc.deadline} reason={exc.reason}")
            ctx.step(cleanup, ctx.message_id, name="cleanup")
            raise

    @handler
    def crash(self, ctx: Context, msg: Crash) -> str:
        raise RuntimeError(f"{ctx.actor_id} crashed")

    @handler
    def stop_when_canceled(self, ctx: Context, msg: Stop) -> str:
        try:
            ctx.step(pause, msg.seconds, name="work")
            return "worked"
        except Canceled:
            ctx.step(cleanup, ctx.message_id, name="cleanup")
            ctx.stop(Exit.SHUTDOWN, "canceled")
            raise


class Parent(DurableActor[None]):
    """Asks a child of its own, and answers with what the call raised."""

    @handler
    def delegate(self, ctx: Context, msg: Delegate) -> str:
        spec = ChildSpec(restart=Restart(msg.restart), intensity=0)
        child = ctx.spawn(Child, id=f"{ctx.actor_id}/{msg.child}", spec=spec)
        ask: Any = Crash() if msg.crash else (msg.nap or msg.job)
        try:
            ctx.call(child, ask, timeout=msg.timeout)
        except ChildCanceledError as exc:
            return f"ChildCanceledError {exc.child_id}: {exc}"
        except ChildFailedError as exc:
            return f"ChildFailedError {exc.child_id}: {type(exc.cause).__name__}"
        return "done"


class Team(Supervisor):
    """One transient and one permanent worker."""

    intensity = 5

    def children(self) -> list[ChildDef]:
        return [
            child(Child, id="transient", restart="transient"),
            child(Child, id="permanent", restart="permanent"),
        ]


class Fan(msgspec.Struct, frozen=True):
    """Spawn ``n`` workers and have each work ``seconds``, all at once; gather."""

    n: int
    seconds: float = 60.0


class FanOut(DurableActor[None]):
    """A run fanning out to ``n`` child actors with ``start_call``."""

    @handler
    def fan(self, ctx: Context, msg: Fan) -> list[str]:
        calls = []
        for i in range(msg.n):
            worker = ctx.spawn(Child, id=f"{ctx.actor_id}/w{i:03d}")
            calls.append(ctx.start_call(worker, Job(i, msg.seconds)))
        return list(ctx.gather(*calls, returns=str))


# -- timeouts ----------------------------------------------------------------------------------


class AsyncStep(msgspec.Struct, frozen=True):
    """Run an async step that takes ``seconds``, with ``timeout``."""

    seconds: float
    timeout: float | None = None


class SyncStep(msgspec.Struct, frozen=True):
    """Run a sync step whose first ``slow_attempts`` attempts take ``seconds`` (the others
    return at once), with ``timeout`` and up to ``attempts`` attempts."""

    seconds: float
    timeout: float
    slow_attempts: int = 1
    attempts: int = 1


async def async_work(seconds: float) -> str:
    sid = step_id()
    mark("work", sid)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark("work:cancelled", sid)
        raise
    return f"worked {seconds}"


def sync_work(seconds: float, slow_attempts: int) -> str:
    step = current_step()
    assert step is not None
    mark("work", f"{step.id}#{step.attempt}")
    if step.attempt <= slow_attempts:
        time.sleep(seconds)
    mark("work:done", f"{step.id}#{step.attempt}")
    return f"attempt {step.attempt}"


class Timed(DurableActor[None]):
    """Runs steps with timeouts; answers with what they returned or raised."""

    @handler
    def run_async(self, ctx: Context, msg: AsyncStep) -> str:
        try:
            return ctx.step(async_work, msg.seconds, timeout=msg.timeout, name="work")
        except StepTimedOutError as exc:
            return f"StepTimedOutError: {exc}"
        except Canceled as exc:
            mark("cancelled", f"{ctx.message_id} deadline={exc.deadline}")
            ctx.step(cleanup, ctx.message_id, name="cleanup")
            raise

    @handler
    def run_sync(self, ctx: Context, msg: SyncStep) -> str:
        retry = RetryPolicy(max_attempts=msg.attempts, initial_interval=0.01)
        try:
            return ctx.step(
                sync_work,
                msg.seconds,
                msg.slow_attempts,
                timeout=msg.timeout,
                retry=retry,
                name="work",
            )
        except StepTimedOutError as exc:
            return f"StepTimedOutError: {exc}"
