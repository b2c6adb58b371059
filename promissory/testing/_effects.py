"""Side effects counted across processes: each effect appends one line to a shared file.

A crash test gives its child processes ``$PROMISSORY_EFFECTS`` (a file path); scenario code
calls ``effect(name, key)`` where it does something that must not happen twice. The parent
reads the file after the run to count how often each effect ran, across every crash and
restart. Appends of one short line are atomic, and survive the writer's SIGKILL.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

from .._crashpoints import reached

ENV = "PROMISSORY_EFFECTS"


def effect(name: str, key: str = "") -> None:
    """Record that effect ``name`` ran for ``key`` (a no-op outside a crash test)."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = f"{name}\t{key}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    reached("effect.ran", f"{name}:{key}")


def read_effects(path: str | Path) -> collections.Counter[tuple[str, str]]:
    """How many times each (name, key) effect ran, from an effects file."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    p = Path(path)
    if not p.exists():
        return counts
    for line in p.read_text().splitlines():
        name, _, key = line.partition("\t")
        counts[(name, key)] += 1
    return counts
