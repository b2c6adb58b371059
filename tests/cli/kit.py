"""Helpers of the command-line and example tests: run ``promissory`` (or a script) as a user
does, in a subprocess against the test's schema, and read what it printed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.kit import eventually, sql  # noqa: F401 (the package's tests import them from here)

ROOT = Path(__file__).resolve().parents[2]
"""The project's root: the working directory of every child process."""


def child_env(dsn: str | None, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: ``$PROMISSORY_DSN`` is ``dsn`` (or unset), the
    embedded server's home is ``home`` (so a child that wrongly starts one is seen), output
    unbuffered so lines arrive as they are printed."""
    env = dict(os.environ)
    env.pop("PROMISSORY_DSN", None)
    env.pop("PROMISSORY_CRASH_AT", None)
    if dsn is not None:
        env["PROMISSORY_DSN"] = dsn
    env["PROMISSORY_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def promissory_args(dsn: str | None, *args: str) -> list[str]:
    """``python -m promissory [--dsn DSN] args…``."""
    prefix = ["--dsn", dsn] if dsn is not None else []
    return [sys.executable, "-m", "promissory", *prefix, *args]


def run(
    argv: Sequence[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the project's root to its end and capture its output."""
    return subprocess.run(
        list(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command printed to stderr; no traceback."""
    assert result.returncode not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("promissory: "), lines[0]
    return lines[0]


def json_out(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON value a ``--json`` command printed on stdout."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


class Proc:
    """A child process whose output is read as it comes, line by line."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stdout(self) -> str:
        return "\n".join(self.out)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first stdout line matching ``pattern`` (a regex), waiting for it to be printed."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.out:
                    if m := regex.search(line):
                        return m
                if self.popen.poll() is not None and not any(t.is_alive() for t in self._readers):
                    raise AssertionError(
                        f"{self.argv} exited ({self.popen.returncode}) without printing "
                        f"{pattern!r}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.argv} did not print {pattern!r} within {timeout} s\n"
                        f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
                    )
                self._changed.wait(min(left, 0.2))

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to end (and its output to be read); return its exit status."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.argv} still running after {timeout} s\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
            ) from None
        for t in self._readers:
            t.join(5)
        return code

    def result(self, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Wait for the process to end; what it did, as ``subprocess.run`` reports it."""
        code = self.wait(timeout)
        return subprocess.CompletedProcess(self.argv, code, self.stdout, self.stderr)

    def kill(self) -> None:
        """SIGKILL it, if it still runs, and reap it."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.wait(10)


class Procs:
    """The child processes a test starts; whatever still runs at its end is killed."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[Proc] = []

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, env or self.env)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            proc.kill()
