"""Side effects counted across processes, for crash tests.

A crash test gives its child processes ``$PROMISSORY_EFFECTS`` (a file path). The runtime logs
every step that starts running there; scenario code calls ``effect(name, key)`` where it does
something that must not happen twice. The parent reads the file to see how often each ran,
across every crash and restart.
"""

from __future__ import annotations

import collections
from pathlib import Path

import msgspec

from .._crashpoints import EFFECTS_ENV as ENV, log_effect, reached
from ..actors import current_step

__all__ = ["ENV", "EffectRecord", "effect", "read_effects", "read_log"]


def effect(name: str, key: str = "") -> None:
    """Record that effect ``name`` ran for ``key`` (a no-op outside a crash test).

    Inside a step, the step's id is recorded with it, so the harness can check that a tool
    keyed its effect by its idempotency key.
    """
    step = current_step()
    log_effect("effect", name, key, step.id if step is not None else "")
    reached("effect.ran", f"{name}:{key}")


class EffectRecord(msgspec.Struct, frozen=True):
    """One line of the effects log: a step started, or an effect recorded."""

    what: str
    """``"step"`` or ``"effect"``."""
    name: str
    """The step's label (``tool:search``, ``model:lead``, ``module.function``) or effect name."""
    key: str
    """The step's id, or the effect's key."""
    step: str = ""
    """For an effect: the step it ran in, if any."""


def read_log(path: str | Path) -> list[EffectRecord]:
    """Every record of an effects file, in order."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text().splitlines():
        fields = line.split("\t")
        if fields[0] in ("step", "effect") and len(fields) >= 3:
            records.append(EffectRecord(*fields[:4]))
    return records


def read_effects(path: str | Path) -> collections.Counter[tuple[str, str]]:
    """How many times each recorded effect ran, by (name, key)."""
    return collections.Counter((r.name, r.key) for r in read_log(path) if r.what == "effect")
