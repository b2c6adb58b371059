"""promissory's side of the suite: the actors and the trial of each workload (in a child).

Every trial opens one ``Runtime`` on the benchmark's database, does its work, closes the
runtime (so every connection is closed before the process exits) and returns a dict:
``samples`` (seconds), ``units`` (steps, messages or turns per sample), ``steps_total``
(every step the process did, warm-up included: the divisor of the commit and WAL counts),
``hold`` (seconds the runtime was open: what the idle rate is charged for) and extras.
"""

from __future__ import annotations

import gc
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
from _common import proc_status

from promissory import (
    ChildSpec,
    Context,
    DurableActor,
    Restart,
    Runtime,
    Supervisor,
    child,
    handler,
)
from promissory.actors import Reply

# -- actors -------------------------------------------------------------------------------------


class Run(msgspec.Struct, frozen=True):
    """Do ``n`` no-op steps."""

    n: int


class Nap(msgspec.Struct, frozen=True):
    """Sleep durably for ``seconds``."""

    seconds: float


class Probe(msgspec.Struct, frozen=True):
    """Note when the handler started."""

    k: int


class Fan(msgspec.Struct, frozen=True):
    """Start ``width`` children, call each, one of them (``fail``) crashing once."""

    width: int
    fail: int


class Work(msgspec.Struct, frozen=True):
    """A child's work; ``crash`` makes its first handling raise."""

    i: int
    crash: bool = False


def noop(i: int) -> int:
    return i


# What the handlers note, per process (W3: when the handler was entered and when the first
# step ran for real; W5/W6: handler entries and crashes).
MARKS: dict[str, float] = {}
ENTRIES: dict[str, list[float]] = {}
_marks_lock = threading.Lock()


def mark_once(key: str) -> None:
    if key not in MARKS:
        MARKS[key] = time.monotonic()


def live_step(i: int) -> int:
    """A no-op step that notes when the first one ran in this process (W3)."""
    mark_once("first_live_step")
    return i


class Stepper(DurableActor[None]):
    @handler
    def run(self, ctx: Context, msg: Run) -> int:
        for i in range(msg.n):
            ctx.step(noop, i)
        return msg.n


class Replayer(DurableActor[None]):
    @handler
    def run(self, ctx: Context, msg: Run) -> int:
        mark_once("handler_entered")
        for i in range(msg.n):
            ctx.step(live_step, i)
        return msg.n


class Sleeper(DurableActor[None]):
    @handler
    def nap(self, ctx: Context, msg: Nap) -> None:
        ctx.sleep(msg.seconds)


class Prober(DurableActor[None]):
    @handler
    def probe(self, ctx: Context, msg: Probe) -> int:
        MARKS[f"probe/{msg.k}"] = time.monotonic()
        return msg.k


class Worker(DurableActor[None]):
    @handler
    def work(self, ctx: Context, msg: Work) -> int:
        now = time.monotonic()
        key = f"{ctx.actor_id}|{ctx.message_id}"
        with _marks_lock:
            seen = ENTRIES.setdefault(key, [])
            seen.append(now)
            first = len(seen) == 1
        if msg.crash and first:
            raise RuntimeError(f"worker {ctx.actor_id} crashes on {key} (once)")
        return msg.i


class FanOut(DurableActor[None]):
    @handler
    def fan(self, ctx: Context, msg: Fan) -> list[int]:
        spec = ChildSpec(restart=Restart.TRANSIENT)
        refs = [ctx.spawn(Worker, id=f"{ctx.actor_id}/c{i}", spec=spec) for i in range(msg.width)]
        calls = [ctx.start_call(r, Work(i, crash=i == msg.fail)) for i, r in enumerate(refs)]
        return list(ctx.gather(*calls, returns=int))


SUPERVISED = int(os.environ.get("PROMISSORY_BENCH_CHILDREN", "1000"))


class Pool(Supervisor):
    intensity = 1_000_000
    period = 1.0

    def children(self) -> list[Any]:
        return [child(Worker, id=f"c{i}", restart="transient") for i in range(SUPERVISED)]


ACTORS = [Stepper, Replayer, Sleeper, Prober, Worker, FanOut, Pool]


# -- helpers ------------------------------------------------------------------------------------


class Opened:
    """A runtime, and when it was opened (for the idle-rate charge)."""

    def __init__(self, dsn: str, **options: Any) -> None:
        self.t0 = time.monotonic()
        self.rt = Runtime(dsn, actors=ACTORS, **options).open()
        self.opened = time.monotonic()

    def close(self) -> float:
        self.rt.close()
        return time.monotonic() - self.t0


class StoreCount:
    """The store's own count of its write transactions (the group-commit writer's batches)
    and reads (queries on its read pool) over the timed part of a trial: what the message
    path costs this process, whatever else the database serves meanwhile. The reads include
    the fleet's look at the other nodes (two small queries every 0.5 s)."""

    def __init__(self, rt: Runtime) -> None:
        assert rt.store is not None
        self.store = rt.store
        self.writes = -self.store.writer_stats[0]
        self.reads = -self.store.reads

    def stop(self, units: int) -> dict[str, float]:
        self.writes += self.store.writer_stats[0]
        self.reads += self.store.reads
        return {"units": units, "writes": self.writes, "reads": self.reads}


def _result(op: Opened, **fields: Any) -> dict[str, Any]:
    fields["hold"] = op.close()
    fields["open_seconds"] = op.opened - op.t0
    return fields


def _parallel(n: int, fn: Any, threads: int = 16) -> None:
    with ThreadPoolExecutor(max_workers=min(threads, max(1, n))) as pool:
        list(pool.map(fn, range(n)))


# -- trials -------------------------------------------------------------------------------------


def idle(dsn: str, hold: float) -> dict[str, Any]:
    """Open a runtime, do nothing for ``hold`` seconds, close it (the idle calibration)."""
    op = Opened(dsn)
    time.sleep(hold)
    return _result(op, samples=[], units=0, steps_total=0)


def w1(dsn: str, n: int, warmup: int, runs: int) -> dict[str, Any]:
    """One actor, one message at a time, each handler doing ``n`` no-op steps."""
    op = Opened(dsn)
    ref = op.rt.spawn(Stepper, id="w1")
    for _ in range(warmup):
        ref.ask(Run(n)).get(timeout=120)
    samples = []
    count = StoreCount(op.rt)
    for _ in range(runs):
        t = time.perf_counter()
        ref.ask(Run(n)).get(timeout=120)
        samples.append(time.perf_counter() - t)
    total = warmup + runs
    return _result(
        op,
        samples=samples,
        units=n,
        steps_total=n * total,
        messages=total,
        store_count=count.stop(runs * n or runs),
    )


def w1_otel(dsn: str, n: int, warmup: int, runs: int) -> dict[str, Any]:
    """W1 with OpenTelemetry tracing on: every message and step a span, kept by the SDK's
    in-memory exporter (the ``otel`` extra).

    The messages alternate, traced and not, on the same actor in the same process, so each
    traced sample has an untraced one beside it (``off_samples``): their ratio is the cost of
    tracing, free of the machine's drift between trials.

    Spans go through a ``BatchSpanProcessor``, what promissory sets up from the ``OTEL_*``
    variables, and each traced message's time includes flushing them all to the exporter
    (``force_flush``), so the export is billed to the message that made the spans, not to its
    untraced neighbour.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from promissory import disable_tracing, enable_tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    op = Opened(dsn)
    ref = op.rt.spawn(Stepper, id="w1")

    cpu: dict[bool, list[float]] = {True: [], False: []}

    def one(traced: bool) -> float:
        if traced:
            enable_tracing(provider)
        else:
            disable_tracing()
        c = time.process_time()
        t = time.perf_counter()
        ref.ask(Run(n)).get(timeout=120)
        if traced:
            provider.force_flush()
        took = time.perf_counter() - t
        cpu[traced].append(time.process_time() - c)
        return took

    for i in range(warmup):
        one(i % 2 == 0)
        one(i % 2 == 1)
    exporter.clear()
    cpu[True].clear()
    cpu[False].clear()
    on, off = [], []
    for i in range(runs):
        # Alternate which goes first, so neither is always the warmer.
        for traced in (True, False) if i % 2 == 0 else (False, True):
            (on if traced else off).append(one(traced))
    disable_tracing()
    spans = len(exporter.get_finished_spans())
    # Each traced message: its send, its handling, and a span per step.
    assert spans >= runs * (n + 2), spans
    total = 2 * (warmup + runs)
    return _result(
        op,
        samples=on,
        off_samples=off,
        cpu_on=cpu[True],
        cpu_off=cpu[False],
        units=n,
        steps_total=n * total,
        messages=total,
        spans=spans,
    )


def w2(
    dsn: str, actors: int, steps: int, warmup: int, batches: int, senders: int = 100
) -> dict[str, Any]:
    """``actors`` actors each handling one message of ``steps`` steps, all at once: every
    message is sent (ask) from up to ``senders`` client threads, then every reply awaited.

    Up to 100 senders is DBOS's side of W2 (its workflows are started from up to 100 client
    threads, ``_dbos.concurrent_batches``); ``senders=1`` sends every message from one thread,
    each ask waiting for its own commit (how W2 was run before the eighth pass of issue 17).
    """
    op = Opened(dsn)
    rt = op.rt
    refs = [None] * actors

    def spawn(i: int) -> None:
        refs[i] = rt.spawn(Stepper, id=f"w2/{i}")

    _parallel(actors, spawn)
    peak = proc_status()["threads"]
    pool = ThreadPoolExecutor(max_workers=min(actors, senders)) if senders > 1 else None

    def ask(ref: Any) -> Reply[Any]:
        return ref.ask(Run(steps))  # type: ignore[no-any-return]

    def batch() -> float:
        nonlocal peak
        t = time.perf_counter()
        replies = list(pool.map(ask, refs)) if pool is not None else [ask(r) for r in refs]
        peak = max(peak, proc_status()["threads"])
        for reply in replies:
            reply.get(timeout=300)
        return time.perf_counter() - t

    for _ in range(warmup):
        batch()
    count = StoreCount(rt)
    samples = [batch() for _ in range(batches)]
    if pool is not None:
        pool.shutdown()
    total = (warmup + batches) * actors
    return _result(
        op,
        store_count=count.stop(batches * actors * steps),
        samples=samples,
        units=actors * steps,
        steps_total=total * steps,
        messages=total,
        peak_threads=peak,
    )


def w3_crash(dsn: str, n: int, run_id: str) -> dict[str, Any]:
    """Start a message of ``n`` steps; the armed crash point kills this process."""
    op = Opened(dsn)
    ref = op.rt.spawn(Replayer, id="w3")
    ref.ask(Run(n), id=run_id).get(timeout=300)
    return _result(op, samples=[], units=0, steps_total=n, note="the crash point did not fire")


def _mark_journal_loads() -> None:
    """Note when an activation first reads a message's journal (the replay's first query).

    This wraps a private method of the activation, for the figure only; if it has moved, the
    replay is timed from the handler's entry instead (a little shorter).
    """
    from promissory.actors import _activation

    cls = getattr(_activation, "Activation", None)
    load = getattr(cls, "_load_journal", None)
    if load is None:
        return

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        mark_once("journal_load")
        return load(self, *args, **kwargs)

    cls._load_journal = timed  # type: ignore[union-attr]


def w3_restart(dsn: str, run_id: str, imported_at: float) -> dict[str, Any]:
    """Open a runtime after the crash, and wait for the interrupted message to finish."""
    _mark_journal_loads()
    op = Opened(dsn)
    assert op.rt.store is not None
    value = Reply(run_id, op.rt.store).get(timeout=300)
    done = time.monotonic()
    return _result(
        op,
        samples=[],
        units=0,
        steps_total=1,
        value=value,
        imported_at=imported_at,
        open_start=op.t0,
        open_end=op.opened,
        handler_entered=MARKS.get("handler_entered"),
        replay_start=MARKS.get("journal_load") or MARKS.get("handler_entered"),
        first_live_step=MARKS.get("first_live_step"),
        done=done,
        recovery=msgspec.to_builtins(op.rt.recovery),
    )


def w4(dsn: str, waiters: int, seconds: float) -> dict[str, Any]:
    """``waiters`` actors, each suspended in a ``ctx.sleep`` of ``seconds``: the process's
    resident memory and threads once they all wait."""
    op = Opened(dsn)
    rt = op.rt
    host = rt.host
    peak = [proc_status()["threads"]]
    stop = threading.Event()

    def sample_threads() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc_status()["threads"])

    sampler = threading.Thread(target=sample_threads, daemon=True)
    sampler.start()

    parked_so_far = [0]

    def park(prefix: str, count: int) -> float:
        t = time.perf_counter()

        def one(i: int) -> None:
            ref = rt.spawn(Sleeper, id=f"{prefix}/{i}")
            ref.tell(Nap(seconds))

        _parallel(count, one)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if host.suspended_count() >= parked_so_far[0] + count and host.live_activations() == 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"only {host.suspended_count()} waiters parked")
        parked_so_far[0] += count
        return time.perf_counter() - t

    def settle() -> dict[str, int]:
        # Let finished activation threads exit, then read the process's figures.
        last = -1
        for _ in range(100):
            gc.collect()
            now = proc_status()["threads"]
            if now == last:
                break
            last = now
            time.sleep(0.1)
        return proc_status()

    warm = max(50, waiters // 20)
    park("w4warm", warm)  # warm-up: imports, caches, malloc arenas for the churn of threads
    base = settle()
    park_seconds = park("w4", waiters)
    after = settle()
    stop.set()
    sampler.join()
    per = (after["rss"] - base["rss"]) / waiters
    return _result(
        op,
        samples=[per],
        units=waiters,
        steps_total=waiters,
        rss_base=base["rss"],
        rss_after=after["rss"],
        threads_base=base["threads"],
        threads_after=after["threads"],
        peak_threads=peak[0],
        park_seconds=park_seconds,
        waiters_total=waiters + warm,
    )


def w5_fan(dsn: str, width: int, warmup: int, runs: int) -> dict[str, Any]:
    """A parent starts ``width`` children (transient) and calls each; one crashes once and is
    restarted by its policy; the parent gathers all replies. Alternates with a fan-out in
    which nothing fails."""
    op = Opened(dsn)
    rt = op.rt
    fail_ms: list[float] = []
    ok_ms: list[float] = []
    restart_ms: list[float] = []
    isolated = 0
    checked = 0
    for k in range(warmup + runs):
        for failing in (True, False):
            parent = f"w5/{k}/{'fail' if failing else 'ok'}"
            ref = rt.spawn(FanOut, id=parent)
            t = time.perf_counter()
            value = ref.ask(Fan(width, 3 if failing else -1)).get(timeout=120)
            took = time.perf_counter() - t
            assert value == list(range(width)), value
            if k < warmup:
                continue
            (fail_ms if failing else ok_ms).append(took)
            if failing:
                entries = {
                    key: times for key, times in ENTRIES.items() if key.startswith(parent + "/c")
                }
                crashed = [ts for key, ts in entries.items() if key.startswith(f"{parent}/c3|")]
                others = [ts for key, ts in entries.items() if not key.startswith(f"{parent}/c3|")]
                checked += 1
                if len(others) == width - 1 and all(len(ts) == 1 for ts in others):
                    isolated += 1
                if crashed and len(crashed[0]) >= 2:
                    restart_ms.append(crashed[0][1] - crashed[0][0])
    return _result(
        op,
        samples=fail_ms,
        units=width,
        steps_total=0,
        ok_samples=ok_ms,
        restart_samples=restart_ms,
        isolated=isolated,
        checked=checked,
        messages=2 * (warmup + runs),
    )


def start_pool(rt: Runtime) -> float:
    """Spawn ``Pool`` as ``sup``, wait until its ``SUPERVISED`` children all run, then touch each
    once (so each has claimed its epoch before a timed part); returns the seconds until all
    ran (the touching not counted)."""
    assert rt.store is not None
    t = time.perf_counter()
    rt.spawn(Pool, id="sup")
    deadline = time.monotonic() + 600
    query = "SELECT count(*) FROM actors WHERE parent = 'sup' AND status = 'running'"
    while time.monotonic() < deadline:
        row = rt.store.read(lambda conn: conn.execute(query).fetchone())
        if row and row[0] >= SUPERVISED:
            break
        time.sleep(0.05)
    started = time.perf_counter() - t
    for reply in [rt.ref(f"sup/c{i}").ask(Work(i)) for i in range(SUPERVISED)]:
        reply.get(timeout=300)
    return started


def w5_supervisor(dsn: str, crashes: int, crash: bool, senders: int = 1) -> dict[str, Any]:
    """A one_for_one supervisor of ``SUPERVISED`` transient children; ``crashes`` of them are
    each sent a message whose first handling raises: the supervisor restarts the child and the
    message is handled again. With ``crash`` false the same messages do not raise.

    ``senders`` threads share the sends (each asks its share in turn, then every reply is
    awaited): one sender measures a client that waits for each send's commit; several, what
    the supervisor's children handle when the sends come from many callers at once, as in a
    service (the writer commits their sends together)."""
    op = Opened(dsn)
    rt = op.rt
    assert rt.store is not None
    started = start_pool(rt)
    pick = random.Random(7).sample(range(SUPERVISED), crashes)
    # Children idle longer than ``idle_timeout`` (2 s) since their touch are passivated: their
    # message wakes them (a thread started). How many are still live is reported beside the
    # figure, since it depends on how fast the touching went.
    live_at_start = sum(1 for a in rt.host.live_ids() if a.startswith("sup/c"))
    t = time.perf_counter()
    count = StoreCount(rt)

    def send(share: list[int]) -> list[Any]:
        return [rt.ref(f"sup/c{i}").ask(Work(i, crash=crash)) for i in share]

    if senders <= 1:
        replies = send(pick)
    else:
        with ThreadPoolExecutor(senders) as pool:
            parts = list(pool.map(send, [pick[k::senders] for k in range(senders)]))
        replies = [r for part in parts for r in part]
    for r in replies:
        r.get(timeout=300)
    took = time.perf_counter() - t
    counted = count.stop(crashes)
    restarts = rt.store.read(
        lambda conn: conn.execute(
            "SELECT coalesce(sum(restarts), 0) FROM actors WHERE parent = 'sup'"
        ).fetchone()
    )
    return _result(
        op,
        store_count=counted,
        samples=[took],
        units=crashes,
        steps_total=crashes,
        start_seconds=started,
        restarts=int(restarts[0]) if restarts else None,
        children=SUPERVISED,
        live_at_start=live_at_start,
    )


def w6(dsn: str, passivated: bool, samples: int, pause: float = 0.01) -> dict[str, Any]:
    """Latency from ``tell`` to the handler starting, with the actor's activation live
    (idle, just used) or passivated (no thread; the tell starts one).

    Each tell comes ``pause`` seconds after the process's last work: after the previous
    message (idle), or after the activation was passivated, which happens 5 ms after the
    previous message (``idle_timeout``). The same pause for both: on this VM a tell that
    comes after a longer quiet spell is slower whatever it wakes (an idle actor, 70 ms
    apart: 2.4 ms against 1.1–1.2 ms 10 ms apart, BENCHMARKS.md, eighth pass), which the
    passivated figure charged to the wake until the eighth pass (its tells came 50–60 ms
    apart, ``idle_timeout`` 0.05 s then).
    """
    op = Opened(dsn, idle_timeout=0.005) if passivated else Opened(dsn)
    rt = op.rt
    ref = rt.spawn(Prober, id="w6")
    ref.ask(Probe(-1)).get(timeout=30)
    lat = []
    count = StoreCount(rt)
    for k in range(samples + 5):
        if passivated:
            deadline = time.monotonic() + 5
            while rt.host.live_activations() and time.monotonic() < deadline:
                time.sleep(0.001)
        time.sleep(pause)
        t = time.monotonic()
        ref.tell(Probe(k))
        while f"probe/{k}" not in MARKS:
            time.sleep(0.0002)
        if k >= 5:
            lat.append(MARKS[f"probe/{k}"] - t)
    return _result(
        op,
        samples=lat,
        units=1,
        steps_total=0,
        messages=samples + 6,
        store_count=count.stop(samples + 5),
    )


# -- W7: the agent -----------------------------------------------------------------------------

WORDS = (
    "actor promise durable step replay journal postgres commit supervisor restart timer "
    "agent model tool transcript message mailbox fence epoch lease recovery snapshot"
).split()


def tool_text(i: int, size: int = 5000) -> str:
    """``size`` characters of deterministic word salad (compresses about as well as text)."""
    rng = random.Random(i)
    out: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(WORDS) + (str(rng.randrange(1000)) if rng.random() < 0.3 else "")
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:size]


def _agent(name: str, turns: int, text_size: int) -> Any:
    from promissory.agents import Agent, ScriptedModel, call, reply

    def fetch(i: int) -> str:
        """Fetch page ``i``."""
        return tool_text(i, text_size) if text_size else ""

    script = [reply("", call("fetch", f"call-{t}", i=t)) for t in range(turns)] + ["done"]
    return Agent(name, "Benchmark agent.", ScriptedModel(script), tools=[fetch])


def w7_storage(dsn: str, turns: int, text_size: int) -> dict[str, Any]:
    """One agent run of ``turns`` turns, each calling a tool that returns ``text_size``
    characters: the bytes it adds to the store, and what keeping the whole transcript at
    every step would have stored instead."""
    op = Opened(dsn)
    rt = op.rt
    assert rt.store is not None
    agent = _agent("w7store", turns, text_size)
    size_q = "SELECT pg_total_relation_size('promises')"

    def size() -> int:
        row = rt.store.read(lambda conn: conn.execute(size_q).fetchone())  # type: ignore[union-attr]
        return int(row[0])

    before = size()
    t = time.perf_counter()
    out = rt.run(agent, "Read every page.", id="w7/run", timeout=600)
    took = time.perf_counter() - t
    after = size()
    rows = rt.store.read(
        lambda conn: conn.execute(
            "SELECT id, pg_column_size(p.*), octet_length(coalesce(value::text, '')), "
            "octet_length(coalesce(param::text, '')) FROM promises p "
            "WHERE id = 'w7/run' OR id LIKE 'w7/run/%%' ORDER BY seq"
        ).fetchall()
    )
    row_bytes = sum(r[1] for r in rows)
    deltas = [r[2] for r in rows if r[0] != "w7/run"]  # what each step added (its JSON value)
    task = next((r[3] for r in rows if r[0] == "w7/run"), 0)
    whole, so_far = 0, task
    for d in deltas:
        so_far += d
        whole += so_far
    return _result(
        op,
        samples=[float(after - before)],
        units=1,
        steps_total=len(deltas),
        output=out,
        seconds=took,
        table_bytes=after - before,
        row_bytes=row_bytes,
        rows=len(rows),
        delta_json_bytes=sum(deltas) + task,
        whole_history_bytes=whole,
    )


def w7_turns(dsn: str, agents: int, turns: int, warmup: int, batches: int) -> dict[str, Any]:
    """Agent turns per second: ``agents`` runs at once, ``turns`` turns each, a scripted
    model with no latency and a tool that returns an empty string."""
    op = Opened(dsn)
    rt = op.rt
    agent = _agent("w7turns", turns, 0)
    n = [0]

    def batch() -> float:
        t = time.perf_counter()
        handles = []
        for _ in range(agents):
            n[0] += 1
            handles.append(rt.start(agent, "Go.", id=f"w7t/{n[0]}"))
        for h in handles:
            h.result(timeout=600)
        return time.perf_counter() - t

    for _ in range(warmup):
        batch()
    samples = [batch() for _ in range(batches)]
    model_turns = turns + 1  # the final answer is a model call too
    total = (warmup + batches) * agents
    return _result(
        op,
        samples=samples,
        units=agents * model_turns,
        steps_total=total * (2 * turns + 1),
        runs=total,
    )
