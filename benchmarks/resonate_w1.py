"""W1 with Resonate's own Python SDK against ``promissory serve`` and against resonate-pg, side
by side: one durable function of N sequential ``ctx.run`` steps (N = 1, 10, 100), wall time per
workflow, steps per second and database commits per step.

Usage::

    .venv/bin/python benchmarks/resonate_w1.py [--dsn DSN] [--repeat 3] [--ns 1,10,100]
        [--runs 20,10,5] [--resonate-python PATH] [--resonate-sql PATH] [--quiet 12]

The SDK (resonate-sdk 0.8.1) runs under Python 3.12 from the virtualenv the protocol tests build
(``~/.cache/promissory-tests/resonate-0.8.1``; ``--resonate-python`` names another). The same
SDK, the same function and the same client process shape run against both servers; only the
SDK's connection differs:

- **promissory serve**: the SDK's HTTP connection to a ``promissory serve`` child, on a fresh
  schema of a database of its own (``promissory_bench_resonate``) for each repetition;
- **resonate-pg**: Resonate's server written as SQL (``resonate.sql`` of resonatehq/resonate-pg),
  loaded afresh into a database of its own (``promissory_bench_resonate_pg``) for each
  repetition, reached by the ``resonate-pg`` connector (0.8.0, which must be importable by the
  SDK's Python). There is no server process: each request is ``SELECT resonate.resonate_rpc()``
  and the connector's pump (a tick every 0.25 s) drains its outbox and, as pg_cron is not
  loaded in this cluster, runs ``resonate.process_timeouts()`` itself (we connect as a
  superuser, which it needs). ``--resonate-sql`` names the SQL file; by default it is read from
  the mirror of the repository if there is one. Without the SQL or the connector, resonate-pg
  is skipped, saying why.

Repetitions alternate between the systems (promissory, resonate-pg, promissory, …), so both
see the same disturbance from other work on the machine.

Commits are ``pg_stat_database.xact_commit`` of the system's own database, so they count only
this benchmark. PostgreSQL 15 flushes a backend's statistics lazily (an idle connection up to
10 s late), so every window ends with ``--quiet`` seconds (12) of no work before it is read.
Per repetition: after the warm-up and a quiet, an idle window (client and server up, no work)
gives the idle commits per second (the server's or connector's tick); then each N's window is
its K runs plus the quiet. A window's commits less the idle rate times the window's length, per
step, are the figure "net of idle" (the method of the research's anchors, with the idle rate
measured once per repetition instead of once per window, to keep the run short). The idle rate
used is the median of the system's repetitions: on a loaded machine one idle window now and
then catches a burst (27 commits/s instead of 13 once), which would spoil its repetition's
figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import (  # noqa: E402
    DEFAULT_DSN,
    Watcher,
    counters,
    spread,
    with_database,
    with_search_path,
)

DATABASE = "promissory_bench_resonate"
DATABASE_PG = "promissory_bench_resonate_pg"
VENV = Path(os.path.expanduser("~/.cache/promissory-tests/resonate-0.8.1/bin/python"))
MIRROR = Path("/work/.mirror/resonatehq+resonate-pg/repo")
PROMISSORY = "promissory serve"
RESONATE_PG = "resonate-pg"


@dataclass
class Window:
    """One N's window: its runs' wall seconds and the counters' deltas over it."""

    n: int
    seconds: list[float]
    length: float
    commits: int


@dataclass
class Trial:
    """One repetition of one system: its idle rate and a window per N."""

    system: str
    idle_rate: float
    windows: list[Window] = field(default_factory=list)
    load: float = 0.0
    other_cores: float = 0.0


def ensure_database(dsn: str, name: str) -> str:
    """The DSN of database ``name``, created if missing."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(dsn, name)


def resonate_sql(path: str | None) -> tuple[str | None, str]:
    """(the text of ``resonate.sql``, where it came from), or (None, why not): from ``path``,
    else from the mirror of resonatehq/resonate-pg at its HEAD."""
    if path is not None:
        if not Path(path).is_file():
            return None, f"no file {path}"
        text = Path(path).read_text()
        return text, f"{path} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"
    if not MIRROR.is_dir():
        return None, f"no --resonate-sql given and no mirror of resonatehq/resonate-pg at {MIRROR}"
    git = ["git", "--git-dir", str(MIRROR)]
    shown = subprocess.run([*git, "show", "HEAD:resonate.sql"], capture_output=True, text=True)
    if shown.returncode != 0:
        return None, f"no resonate.sql in {MIRROR}: {shown.stderr.strip()}"
    commit = subprocess.run(
        [*git, "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    )
    digest = hashlib.sha256(shown.stdout.encode()).hexdigest()[:12]
    return shown.stdout, f"resonate-pg @ {commit.stdout.strip()} (sha256 {digest})"


def has_connector(python: str) -> bool:
    """Whether the SDK's Python can import the resonate-pg connector."""
    done = subprocess.run([python, "-c", "import resonate_pg"], capture_output=True)
    return done.returncode == 0


@contextlib.contextmanager
def promissory_server(db_dsn: str) -> Iterator[str]:
    """A ``promissory serve`` child on a fresh schema of ``db_dsn``: yields its URL."""
    schema = "rw1_" + uuid.uuid4().hex[:8]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    server = subprocess.Popen(
        [sys.executable, "-m", "promissory", "--dsn", with_search_path(db_dsn, schema)]
        + ["serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    try:
        assert server.stdout is not None
        yield server.stdout.readline().split()[2]
    finally:
        server.terminate()
        server.wait(30)
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def resonate_pg_server(db_dsn: str, sql: str) -> Iterator[str]:
    """resonate-pg's schema loaded afresh into ``db_dsn`` (so every repetition starts from the
    same empty tables): yields the conninfo the connector is given."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # resonate.sql warns that pg_cron is not scheduled; expected here (see the docstring).
        conn.add_notice_handler(lambda notice: None)
        conn.execute("DROP SCHEMA IF EXISTS resonate CASCADE")
        conn.execute(sql.encode())
    yield db_dsn


def read_until(app: subprocess.Popen[str], word: str) -> list[str]:
    """The next line of the app that starts with ``word``, split (it must be that line)."""
    assert app.stdout is not None
    line = app.stdout.readline().split()
    if not line or line[0] != word:
        raise RuntimeError(f"the SDK's app said {line!r}, expected {word!r}")
    return line


def trial(
    system: str,
    target: str,
    db_dsn: str,
    python: str,
    plan: list[tuple[int, int]],
    quiet: float,
    idle: float,
) -> Trial:
    """One repetition: the SDK's app against ``target``, an idle window, then a window of K
    runs of N steps for each (N, K) of ``plan``."""
    warm = ",".join(str(n) for n, _ in plan)
    app = subprocess.Popen(
        [python, str(HERE / "_resonate_w1_app.py"), target, warm, "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdin is not None
        read_until(app, "ready")
        time.sleep(quiet)  # the warm-up's commits are flushed before the first reading
        load = os.getloadavg()[0]
        watcher = Watcher(
            with_database(db_dsn, "postgres"),
            mine=(b"resonate_w1", DATABASE.encode()),
            databases=(DATABASE, DATABASE_PG),
        )
        c0 = counters(db_dsn)
        time.sleep(idle)
        c1 = counters(db_dsn)
        result = Trial(system, (c1["commits"] - c0["commits"]) / idle, load=load)
        for n, k in plan:
            before, started = counters(db_dsn), time.monotonic()
            app.stdin.write(f"run {n} {k}\n")
            app.stdin.flush()
            seconds = [float(s) for s in read_until(app, "done")[1:]]
            time.sleep(quiet)
            after, length = counters(db_dsn), time.monotonic() - started
            result.windows.append(Window(n, seconds, length, after["commits"] - before["commits"]))
        watcher.close()
        result.other_cores = watcher.other_cores
        app.stdin.write("quit\n")
        app.stdin.flush()
        app.wait(30)
        return result
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(30)


def net_per_step(idle_rate: float, w: Window) -> float:
    """Commits per step of window ``w``, less the idle commits (at ``idle_rate`` per second)
    over as long."""
    return (w.commits - idle_rate * w.length) / (w.n * len(w.seconds))


def report(trials: list[Trial], plan: list[tuple[int, int]]) -> None:
    """The table: per system and N, the median wall per workflow over all runs of all
    repetitions, the steps/s at that median, and the median over repetitions of the commits per
    step net of idle (at the median of the repetitions' idle rates)."""
    systems = list(dict.fromkeys(t.system for t in trials))
    print()
    print(
        "| system | W1 | median wall per workflow | spread (all runs) | steps/s at median | "
        "commits/step, net of idle | spread (repetitions) | idle commits/s |"
    )
    print("|---|---|---:|---|---:|---:|---|---:|")
    for system in systems:
        mine = [t for t in trials if t.system == system]
        idle = statistics.median(t.idle_rate for t in mine)
        for n, _ in plan:
            walls = [s * 1000 for t in mine for w in t.windows if w.n == n for s in w.seconds]
            nets = [net_per_step(idle, w) for t in mine for w in t.windows if w.n == n]
            median = statistics.median(walls)
            print(
                f"| {system} | N={n} | {median:,.1f} ms | {spread(walls, '{:,.1f}')} ms "
                f"(n={len(walls)}) | {n / median * 1000:,.0f} | {statistics.median(nets):.2f} | "
                f"{spread(nets, '{:.2f}')} | {idle:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PROMISSORY_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each system")
    parser.add_argument("--ns", default="1,10,100", help="the steps of a workflow, each N")
    parser.add_argument("--runs", default="20,10,5", help="timed runs of each N per repetition")
    parser.add_argument("--quiet", type=float, default=12.0, help="seconds before a reading")
    parser.add_argument("--idle", type=float, default=12.0, help="seconds of the idle window")
    parser.add_argument("--resonate-python", default=os.environ.get("RESONATE_VENV_PYTHON"))
    parser.add_argument("--resonate-sql", help="resonate-pg's resonate.sql (default: the mirror)")
    parser.add_argument("--only", choices=[PROMISSORY, RESONATE_PG], help="run one system")
    args = parser.parse_args()
    plan = list(zip(map(int, args.ns.split(",")), map(int, args.runs.split(",")), strict=True))
    python = args.resonate_python or str(VENV)
    if not Path(python).exists():
        sys.exit(
            f"no Python with resonate-sdk at {python}: run tests/protocol once (it builds that "
            "virtualenv) or pass --resonate-python"
        )
    systems = [PROMISSORY, RESONATE_PG] if args.only is None else [args.only]
    sql, origin = resonate_sql(args.resonate_sql)
    if RESONATE_PG in systems and sql is None:
        print(f"resonate-pg skipped: {origin}", flush=True)
        systems.remove(RESONATE_PG)
    elif RESONATE_PG in systems and not has_connector(python):
        print(
            f"resonate-pg skipped: {python} cannot import resonate_pg (install it there: "
            f"{python} -m pip install resonate-pg==0.8.0)",
            flush=True,
        )
        systems.remove(RESONATE_PG)
    elif RESONATE_PG in systems:
        print(f"resonate-pg: {origin}", flush=True)
    dsns = {PROMISSORY: ensure_database(args.dsn, DATABASE)}
    if RESONATE_PG in systems:
        dsns[RESONATE_PG] = ensure_database(args.dsn, DATABASE_PG)
    trials: list[Trial] = []
    for rep in range(args.repeat):
        for system in systems:
            db_dsn = dsns[system]
            server = (
                promissory_server(db_dsn)
                if system == PROMISSORY
                else resonate_pg_server(db_dsn, str(sql))
            )
            with server as target:
                t = trial(system, target, db_dsn, python, plan, args.quiet, args.idle)
            trials.append(t)
            print(
                f"  rep {rep} {system}: load {t.load:.2f}, other processes "
                f"{t.other_cores:.2f} cores, idle {t.idle_rate:.1f} commits/s",
                flush=True,
            )
            for w in t.windows:
                print(
                    f"    N={w.n}: {len(w.seconds)} runs, median "
                    f"{statistics.median(w.seconds) * 1000:.1f} ms; {w.commits} commits in "
                    f"{w.length:.1f} s ({net_per_step(t.idle_rate, w):.2f}/step net of this "
                    "repetition's idle rate)",
                    flush=True,
                )
    report(trials, plan)


if __name__ == "__main__":
    main()
