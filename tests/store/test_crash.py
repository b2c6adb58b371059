"""A process killed mid-batch: what it acknowledged is kept, and no row is half-written."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from promissory.store import PromiseState, Store

from .conftest import child_env

# The child runs creates and resolves from many threads and prints a line for each call that
# returned: "C id" once the create is durable, "R id" once the resolve is.
CHILD = """
import sys, threading
from promissory.store import Store

store = Store(sys.argv[1])
out = threading.Lock()

def ack(line):
    with out:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

def work(t):
    for j in range(100_000):
        id = f"crash/{t}/{j}"
        store.create(id, param={"j": j}, tags={"t": str(t)})
        ack("C " + id)
        store.resolve(id, {"v": j})
        ack("R " + id)

threads = [threading.Thread(target=work, args=(t,)) for t in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def run_and_kill(dsn: str, after: int) -> tuple[set[str], set[str]]:
    """Run the child until it has acknowledged ``after`` calls, SIGKILL it, return its acks."""
    name = f"crash-child-{os.getpid()}-{after}"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env({"PGAPPNAME": name}),
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    try:
        while len(lines) < after:
            line = child.stdout.readline()
            assert line, f"the child ended early: {child.stderr.read() if child.stderr else ''!r}"
            lines.append(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)  # acks written before the kill are still in the pipe
    assert child.returncode == -signal.SIGKILL
    # A COMMIT the child sent before it died may still be running on the server: the
    # table is read once the child's sessions are gone (what commits then, commits).
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "the killed child's sessions did not end"
            time.sleep(0.01)
    lines.extend(rest.splitlines(keepends=True))
    created: set[str] = set()
    resolved: set[str] = set()
    for raw in lines:
        if not raw.endswith(b"\n"):
            continue  # cut off mid-line by the kill: not an acknowledgement
        kind, id = raw.decode().split()
        (created if kind == "C" else resolved).add(id)
    return created, resolved


def check_table(db: psycopg.Connection[Any], created: set[str], resolved: set[str]) -> None:
    rows = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT id, state, (param->>'j')::int, (value->>'v')::int, settled_at IS NOT NULL, "
            "tags->>'t' FROM promises"
        ).fetchall()
    }
    assert created <= set(rows), sorted(created - set(rows))[:5]
    for id in resolved:
        state, j, v, has_settled_at, _ = rows[id]
        assert (state, v, has_settled_at) == ("resolved", j, True), id
    for id, (state, j, v, has_settled_at, t) in rows.items():
        # Whole rows only: each write of the workload is all there or not there at all.
        assert j == int(id.rsplit("/", 1)[1]), id
        assert t == id.split("/")[1], id
        if state == "pending":
            assert (v, has_settled_at) == (None, False), id
        else:
            assert (state, v, has_settled_at) == ("resolved", j, True), id


@pytest.mark.timeout(120)
@pytest.mark.parametrize("after", [1, 40, 400])
def test_every_acknowledged_write_survives_a_sigkill_mid_batch(
    dsn: str, db: psycopg.Connection[Any], after: int
) -> None:
    with Store(dsn):
        pass  # migrate first, so the child only writes promises

    created, resolved = run_and_kill(dsn, after)

    assert len(created) + len(resolved) >= after
    check_table(db, created, resolved)


@pytest.mark.timeout(120)
def test_a_restarted_workload_finishes_what_the_killed_one_started(
    dsn: str, db: psycopg.Connection[Any], count_rows: Callable[..., int]
) -> None:
    with Store(dsn):
        pass
    created, resolved = run_and_kill(dsn, random.Random(7).randrange(50, 300))
    check_table(db, created, resolved)
    left = {r[0] for r in db.execute("SELECT id FROM promises WHERE state = 'pending'")}

    with Store(dsn) as store:
        for id in sorted(created):
            again = store.create(id, param={"j": -1})
            assert again.applied is False
            assert again.promise.param_as(dict) == {"j": int(id.rsplit("/", 1)[1])}
        for id in sorted(left):
            outcome = store.resolve(id, {"v": int(id.rsplit("/", 1)[1])})
            assert outcome.applied is True
        for id in sorted(resolved):
            assert store.resolve(id, {"v": -1}).applied is False

        assert store.search(state="pending").items == []
        assert all(
            p.state is PromiseState.RESOLVED
            for p in store.search(prefix="crash/", limit=5000).items
        )
    check_table(db, created | left, resolved | left)
    assert count_rows("state = 'resolved'") == count_rows()
