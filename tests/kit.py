"""Helpers every test package shares: waiting for a state nothing signals, and running Python
in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository's root."""


def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (for states nothing signals)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what or check}")
        time.sleep(0.01)


def python(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run ``python args…`` in the repository's root; return its stdout (it must succeed)."""
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr}"
    return done.stdout
