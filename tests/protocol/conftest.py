"""Fixtures of the protocol tests: Resonate's own Python SDK in a Python 3.12 virtualenv, and a
``promissory serve`` node on the test's schema.

The SDK (resonate-sdk 0.8.1, from the package registry) needs Python 3.12 or newer; the
virtualenv is built once and kept in ``~/.cache/promissory-tests`` (``$RESONATE_VENV`` names
another). Its tests skip, saying so, only where no Python 3.12 can be found.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli.kit import Proc, Procs, child_env, promissory_args

SDK = "resonate-sdk==0.8.1"
APP = Path(__file__).with_name("resonate_app.py")


def _works(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys, venv; assert sys.version_info >= (3, 12)"],
            capture_output=True,
            timeout=30,
        )
    except OSError:
        return False
    return done.returncode == 0


def find_python312() -> str | None:
    """A Python 3.12 (or newer) interpreter that runs: ``$RESONATE_PYTHON``, this one, or one
    on the machine (pyenv's versions, PATH)."""
    candidates = [os.environ.get("RESONATE_PYTHON", "")]
    if sys.version_info >= (3, 12):
        candidates.append(sys.executable)
    for root in filter(None, [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv")]):
        candidates += sorted(glob.glob(f"{root}/versions/3.1[2-9]*/bin/python"))
    candidates += [shutil.which(name) or "" for name in ("python3.12", "python3.13")]
    return next((c for c in candidates if c and _works(c)), None)


@pytest.fixture(scope="session")
def resonate_python() -> str:
    """The python of a virtualenv holding resonate-sdk 0.8.1 (built on first use)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    default = Path(cache, "promissory-tests", "resonate-0.8.1")
    venv = Path(os.environ.get("RESONATE_VENV") or default)
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    base = find_python312()
    if base is None:
        pytest.skip(
            "resonate-sdk 0.8.1 needs Python 3.12 or newer and none was found (set "
            "RESONATE_PYTHON to one)"
        )
    venv.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=venv.parent))
    subprocess.run([base, "-m", "venv", str(building)], check=True, timeout=300)
    done = subprocess.run(
        [str(building / "bin" / "python"), "-m", "pip", "install", "-q", SDK],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"pip install {SDK} failed:\n{done.stderr}"
    # Only ``bin/python -m …`` is used, which works from the venv's final place too.
    try:
        building.rename(venv)
    except OSError:  # another session built it meanwhile
        shutil.rmtree(building, ignore_errors=True)
    return str(python)


@pytest.fixture
def env(dsn: str, tmp_path: Path) -> dict[str, str]:
    """The children's environment: the test's DSN, a home of their own."""
    return child_env(dsn, tmp_path / "home")


@pytest.fixture
def node(dsn: str, procs: Procs) -> str:
    """The URL of a ``promissory serve`` on the test's schema (a child process)."""
    proc = procs.start(promissory_args(dsn, "serve", "--port", "0"))
    match = proc.wait_for_line(r"promissory serve: (http://\S+)")
    return match.group(1)


class App:
    """Runs ``resonate_app.py`` (the SDK's side) against a node."""

    def __init__(self, python: str, url: str, procs: Procs, log: Path) -> None:
        self.python, self.url, self.procs, self.log = python, url, procs, log

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.procs.env, "APP_LOG": str(self.log), **extra}

    def worker(self, group: str, **extra: str) -> Proc:
        proc = self.procs.start(
            [self.python, str(APP), "worker", self.url, group], env=self.env(**extra)
        )
        proc.wait_for_line("worker ready")
        return proc

    def start(self, mode: str, group: str, *args: str, **extra: str) -> Proc:
        return self.procs.start(
            [self.python, str(APP), mode, self.url, group, *args], env=self.env(**extra)
        )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def app(resonate_python: str, node: str, procs: Procs, tmp_path: Path) -> App:
    """The SDK's side of a conformance test, pointed at ``node``."""
    return App(resonate_python, node, procs, tmp_path / "app.log")
