"""Schedules on several nodes: two node processes fire one every-second schedule, one is
SIGKILLed, and every firing time from the first to the last has exactly one run (none twice,
none lost: the claim of the dead node passes to the live one).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

from tests.cli.kit import Proc, Procs, child_env, promissory_args, run
from tests.kit import ROOT, eventually, sql


def firing_times(dsn: str) -> list[datetime]:
    """The firing times of the runs the schedule made, in order."""
    rows = sql(
        dsn,
        "SELECT id FROM promises WHERE kind = 'message' AND id = recipient "
        "AND starts_with(id, 'ticks/every-second/') ORDER BY id",
    )
    return [datetime.strptime(r[0].rsplit("/", 1)[1], "%Y-%m-%dT%H:%M:%SZ") for r in rows]


def start_node(procs: Procs, dsn: str, *args: str) -> Proc:
    proc = procs.start([sys.executable, "-m", "tests.schedules.node", dsn, *args])
    proc.wait_for_line(r"^READY ")
    return proc


def test_two_nodes_one_killed_make_every_firing_once(dsn: str, tmp_path: Path) -> None:
    env = child_env(dsn, tmp_path, PYTHONPATH=str(ROOT))
    procs = Procs(env)
    try:
        first = start_node(procs, dsn, "--define")
        start_node(procs, dsn)
        eventually(lambda: len(firing_times(dsn)) >= 4, what="firings on two nodes")
        first.kill()  # SIGKILL, whatever it was doing (perhaps holding a claim)
        after_kill = len(firing_times(dsn))
        eventually(lambda: len(firing_times(dsn)) >= after_kill + 4, what="firings after it")
        listed = run(promissory_args(dsn, "schedules", "--json"), env)
        assert listed.returncode == 0, listed.stderr
        assert '"id":"ticks/every-second"' in listed.stdout
        paused = run(promissory_args(dsn, "schedules", "pause", "ticks/every-second"), env)
        assert paused.stdout.strip() == "paused schedule ticks/every-second", paused.stderr
        # A firing claimed just before the pause is made (its run, then the schedule's
        # advance): wait until none is in flight.
        eventually(
            lambda: sql(dsn, "SELECT claimed_by FROM schedules") == [(None,)],
            what="no firing in flight",
        )
    finally:
        procs.close()
    times = firing_times(dsn)
    assert times == [times[0] + timedelta(seconds=i) for i in range(len(times))], times
    [(last_run,)] = sql(dsn, "SELECT last_run FROM schedules")
    assert last_run == f"ticks/every-second/{times[-1]:%Y-%m-%dT%H:%M:%SZ}"


def test_the_schedules_command_lists_pauses_resumes_and_deletes(dsn: str, tmp_path: Path) -> None:
    from promissory import Runtime
    from tests.schedules.node import ticker

    with Runtime(dsn) as rt:
        rt.schedule("reports/daily", cron="0 7 * * *", agent=ticker, timezone="Europe/Paris")
    env = child_env(dsn, tmp_path)
    table = run(promissory_args(dsn, "schedules"), env)
    assert table.returncode == 0, table.stderr
    assert "reports/daily" in table.stdout and "Europe/Paris" in table.stdout
    assert "agent:ticker" in table.stdout and "active" in table.stdout
    run(promissory_args(dsn, "schedules", "pause", "reports/daily"), env)
    assert sql(dsn, "SELECT paused FROM schedules") == [(True,)]
    resumed = run(promissory_args(dsn, "schedules", "resume", "reports/daily"), env)
    assert resumed.stdout.startswith("resumed schedule reports/daily; next firing "), resumed
    assert sql(dsn, "SELECT paused FROM schedules") == [(False,)]
    gone = run(promissory_args(dsn, "schedules", "delete", "reports/daily"), env)
    assert gone.stdout.strip() == "deleted schedule reports/daily (its runs stay)"
    missing = run(promissory_args(dsn, "schedules", "pause", "reports/daily"), env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "promissory: no schedule has the id 'reports/daily'"
    no_id = run(promissory_args(dsn, "schedules", "delete"), env)
    assert no_id.returncode == 2 and "needs the schedule's id" in no_id.stderr
    assert run(promissory_args(dsn, "schedules"), env).stdout.strip() == "(no schedules)"
