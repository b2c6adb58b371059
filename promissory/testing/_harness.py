"""Crash tests: run a scenario in a child process, kill it, run it again, compare.

``CrashTest`` runs a scenario function (``module:function``, taking a ``Runtime`` and
returning a JSON-able outcome) in a child process against one database. ``run`` lets it finish;
``run(crash_at="step.kept:3")`` arms a crash point so the child kills itself there;
``run(kill_after=0.4)`` kills it from outside with SIGKILL after that many seconds;
``run(drop_at="exit:1")`` cuts the database connection inside a commit instead. The effects
file counts side effects across every run. A killed run returns once the database has ended
the dead child's sessions: a COMMIT it had sent is then kept or not for good, so what is read
next (``kept_steps``, the next run) sees the store as recovery will.

Example:
    >>> test = CrashTest(dsn, "tests.scenarios:transfer", workdir=tmp_path)  # doctest: +SKIP
    >>> clean = test.run().outcome  # doctest: +SKIP
    >>> test.run(crash_at="step.kept:3").killed  # doctest: +SKIP
    True

"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import make_conninfo

from .._crashpoints import DROP_ENV
from ._effects import ENV, read_effects

MARK = "OUTCOME "
"""The prefix of the child's last stdout line, which holds the outcome as JSON."""
BEGAN = "BEGAN "
"""The prefix of the child's line saying when (``time.monotonic()``) the scenario began."""


class Run(msgspec.Struct, frozen=True):
    """What one child process did."""

    killed: bool
    """It died of SIGKILL (a crash point or ``kill_after``)."""
    outcome: Any
    """The scenario's outcome, when it finished."""
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    scenario_began: float | None = None
    """Seconds from the launch to the scenario's start (the runtime open), if it got there."""

    @property
    def dropped(self) -> str | None:
        """The connection drop it made (``label #n``), if one was armed and came due."""
        for line in self.stderr.splitlines():
            if line.startswith("promissory connection drop "):
                return line.removeprefix("promissory connection drop ")
        return None

    @property
    def crash_point(self) -> str | None:
        """The crash point it died at (``point #n at id``), if it killed itself at one."""
        for line in self.stderr.splitlines():
            if line.startswith("promissory crash point "):
                return line.removeprefix("promissory crash point ")
        return None


class CrashTest:
    """Runs one scenario, repeatedly, in child processes on one database."""

    def __init__(
        self,
        dsn: str,
        scenario: str,
        *,
        workdir: str | Path,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.scenario = scenario
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.effects_file = self.workdir / "effects.log"
        self.timeout = timeout
        self.env = dict(env or {})
        self.runs: list[Run] = []

    def run(
        self,
        *,
        crash_at: str | None = None,
        kill_after: float | None = None,
        drop_at: str | None = None,
    ) -> Run:
        """Run the scenario once in a child process; see the module docstring.

        ``drop_at`` (``label:n``) makes the child's group-commit writer cut its connection
        inside the COMMIT of the n-th batch holding an op of that label (see
        ``promissory._crashpoints.DROP_ENV``): the process lives on and must find out.
        """
        started = time.monotonic()
        tag = f"promissory-crash-test-{os.getpid()}-{next(_RUNS)}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "promissory.testing._child", self.scenario],
            env=self._child_env(crash_at, drop_at, tag),
            cwd=os.getcwd(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if kill_after is not None:
                try:
                    out, err = proc.communicate(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    out, err = proc.communicate(timeout=self.timeout)
            else:
                out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"crash test child did not finish in {self.timeout} s\n--- stderr ---\n{err}"
            ) from None
        outcome = None
        began = None
        for line in out.splitlines():
            if line.startswith(MARK):
                outcome = msgspec.json.decode(line[len(MARK) :])
            elif line.startswith(BEGAN):
                # CLOCK_MONOTONIC is the same clock in every process of the machine.
                began = float(line[len(BEGAN) :]) - started
        killed = proc.returncode == -signal.SIGKILL
        if killed:
            _sessions_ended(self.dsn, tag)
        if not killed and proc.returncode != 0:
            raise AssertionError(
                f"crash test child failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
            )
        took = time.monotonic() - started
        result = Run(killed, outcome, proc.returncode, out, err, took, began)
        self.runs.append(result)
        return result

    def _child_env(self, crash_at: str | None, drop_at: str | None, tag: str) -> dict[str, str]:
        """The child's environment: this one's, the test's, and where and how to fail; its
        sessions are named ``tag`` (``application_name``).
        """
        env = dict(os.environ)
        # The child imports the scenario as this process would: give it the same path.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(self.env)
        env["PROMISSORY_DSN"] = make_conninfo(self.dsn, application_name=tag)
        env[ENV] = str(self.effects_file)
        env.pop("PROMISSORY_CRASH_AT", None)
        env.pop(DROP_ENV, None)
        if crash_at:
            env["PROMISSORY_CRASH_AT"] = crash_at
        if drop_at:
            env[DROP_ENV] = drop_at
        return env

    def run_to_completion(self, max_runs: int = 5) -> Run:
        """Run (unarmed) until a run finishes; return that run."""
        for _ in range(max_runs):
            result = self.run()
            if not result.killed:
                return result
        raise AssertionError(f"the scenario did not finish in {max_runs} runs")

    def effects(self) -> Counter[tuple[str, str]]:
        """How many times each effect ran, over every run so far."""
        return read_effects(self.effects_file)


_RUNS = itertools.count()


def _sessions_ended(dsn: str, tag: str, timeout: float = 10.0) -> None:
    """Wait until the database has no session named ``tag`` left (a killed child's: each one
    finishes what it was doing, a COMMIT say, before it sees its client gone). Best effort:
    a database that cannot be asked is not waited for.
    """
    deadline = time.monotonic() + timeout
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (tag,)
                ).fetchone()
                if not row or not row[0]:
                    return
                time.sleep(0.005)
    except psycopg.Error:
        return
