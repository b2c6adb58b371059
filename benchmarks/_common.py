"""What the benchmarks share: database counters, the watcher for other work, child processes,
and how spreads are printed.

The method (from ``store_throughput.py``, which uses this module too):

- every trial runs in a fresh child process, which closes all its connections before it exits,
  because PostgreSQL 15 flushes a backend's statistics lazily but always when it exits;
- the parent reads ``xact_commit`` of the database, ``pg_current_wal_lsn()`` and the xid
  horizon on fresh connections around the child, after a short settle;
- a ``Watcher`` polls ``pg_stat_activity`` and the CPU time of other processes during the
  trial, so a trial that shared the machine with other work is flagged as disturbed;
- other sessions only add to these database- and cluster-wide counters, so the least per-op
  figure over the repetitions is the benchmark's own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
APP = os.environ.get("PROMISSORY_BENCH_APP", "promissory-bench")
"""The application_name of this benchmark's connections (its watcher ignores these; a suite run
sets its own, ``promissory-bench-<pid>``, and its children inherit it, so another benchmark
running at the same time is seen as other work)."""


# The database's own ceiling: what a step costs when it is plain SQL on the store's table (same
# indexes and triggers), a row inserted and then settled, with nothing read back.
PG_INSERT = "INSERT INTO promises (id) VALUES (%s)"
PG_UPDATE = (
    "UPDATE promises SET state = 'resolved', value = NULL, settled_at = clock_timestamp(), "
    "awaiting = NULL WHERE id = %s AND state = 'pending'"
)


def pg_batch(cur: psycopg.Cursor[Any], pipeline: psycopg.Pipeline, ids: list[tuple[str]]) -> None:
    """One transaction in one round trip (a pipeline): ``BEGIN``, an ``INSERT`` per id
    (executemany), an ``UPDATE`` per id (executemany), ``COMMIT``."""
    cur.execute("BEGIN")
    cur.executemany(PG_INSERT, ids)
    cur.executemany(PG_UPDATE, ids)
    cur.execute("COMMIT")
    pipeline.sync()


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with ``schema`` as its search_path and the benchmark's application_name."""
    params = conninfo_to_dict(dsn)
    params["options"] = (params.get("options") or "") + f" -csearch_path={schema}"
    params["application_name"] = APP
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def with_database(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at database ``dbname``, with the benchmark's application_name."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    params["application_name"] = APP
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def as_url(dsn: str) -> str:
    """A ``postgresql://`` URL for ``dsn`` (SQLAlchemy, hence DBOS, wants a URL)."""
    from urllib.parse import quote, urlencode

    p = conninfo_to_dict(dsn)
    host = str(p.get("host") or "127.0.0.1")
    port = p.get("port") or "5432"
    user = quote(str(p.get("user") or "postgres"))
    auth = user + (f":{quote(str(p['password']))}" if p.get("password") else "")
    query = {k: str(p[k]) for k in ("application_name",) if p.get(k)}
    if host.startswith("/"):  # a Unix socket directory goes in the query
        query["host"] = host
        host = ""
    q = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{auth}@{host}:{port}/{p.get('dbname') or 'postgres'}{q}"


def counters(dsn: str, datname: str | None = None) -> dict[str, int]:
    """Commits and rollbacks of a database (default: the DSN's), the cluster's WAL position,
    the next transaction id and the checkpoint count, read on a fresh connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_stat_get_db_xact_commit(d.oid), pg_stat_get_db_xact_rollback(d.oid), "
            "pg_current_wal_lsn() - '0/0'::pg_lsn, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
            "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) "
            "FROM pg_database d WHERE d.datname = coalesce(%s, current_database())",
            (datname,),
        ).fetchone()
    assert row is not None, f"no database {datname!r}"
    return {
        "commits": int(row[0]),
        "rollbacks": int(row[1]),
        "wal": int(row[2]),
        "xids": int(row[3]),
        "checkpoints": int(row[4]),
    }


def _other_cpu(mine: Sequence[bytes]) -> dict[int, float]:
    """CPU seconds so far of every process on the machine but PostgreSQL's and the
    benchmark's own (a command line containing one of ``mine``)."""
    hz = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if not cmd or cmd.startswith(b"postgres") or any(m in cmd for m in mine):
            continue  # kernel threads, the database server, this benchmark
        out[int(pid)] = (int(fields[11]) + int(fields[12])) / hz
    return out


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return str(pid)
    words = [os.path.basename(a.decode(errors="replace")) for a in args[:3] if a]
    return " ".join(words)[:60]


class Watcher:
    """Watches a trial for work that is not the benchmark's.

    Polls pg_stat_activity for sessions that are not the benchmark's (any database of the
    cluster: they share its WAL and the machine's CPUs), and measures the CPU time other
    processes on the machine (not PostgreSQL, not the benchmark) used meanwhile. Its polls are
    transactions in the DSN's database: ``polls`` says how many. Sessions in ``databases``
    (the benchmark's own, whatever their application_name) are not other work.
    """

    def __init__(
        self,
        dsn: str,
        mine: Sequence[bytes] = (),
        interval: float = 0.25,
        cores: float = 0.05,
        databases: Sequence[str] = (),
    ) -> None:
        self.seen: set[str] = set()
        self._databases = list(databases)
        self.polls = 0
        self._mine = tuple(mine) or (os.path.basename(sys.argv[0]).encode(),)
        self._cpu0 = _other_cpu(self._mine)
        self._t0 = time.monotonic()
        self._cores = cores
        self.other_cores = 0.0
        self._stop = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            rows = self._conn.execute(
                "SELECT backend_type, coalesce(datname, ''), coalesce(application_name, ''), "
                "left(query, 60) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND backend_type IN ('client backend', 'autovacuum worker') "
                "AND state IS DISTINCT FROM 'idle' "
                "AND coalesce(application_name, '') <> %s "
                "AND NOT coalesce(datname = ANY(%s), false)",
                (APP, self._databases),
            ).fetchall()
            self.polls += 1
            for btype, db, app, query in rows:
                if btype == "autovacuum worker":
                    self.seen.add(query.strip())
                else:
                    self.seen.add(f"{btype} db={db} app={app or '?'}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        cpu1 = _other_cpu(self._mine)
        spent = {pid: c - self._cpu0.get(pid, 0.0) for pid, c in cpu1.items()}
        used = sum(spent.values())
        self.other_cores = max(0.0, used) / (time.monotonic() - self._t0)
        if self.other_cores >= self._cores:
            top = max(spent, key=lambda pid: spent[pid])
            self.seen.add(f"other processes used {self.other_cores:.2f} cores (most: {_name(top)})")


def run_child(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child process that prints its result as JSON on its last line of stdout."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(
            f"child {' '.join(cmd[-3:])} failed with exit code {out.returncode}\n"
            f"--- stdout ---\n{out.stdout[-3000:]}\n--- stderr ---\n{out.stderr[-5000:]}"
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def proc_status() -> dict[str, int]:
    """This process's resident memory (bytes) and thread count, from /proc."""
    rss = threads = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return {"rss": rss, "threads": threads}


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``min–max (IQR a–b)``, or ``min–max`` with fewer than four values."""
    if not values:
        return "—"
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    if len(values) < 4:
        return f"{lo}–{hi}"
    q = statistics.quantiles(values, n=4)
    return f"{lo}–{hi} (IQR {fmt.format(q[0])}–{fmt.format(q[2])})"


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0–100) of ``values``, by linear interpolation."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)
