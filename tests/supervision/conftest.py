"""Fixtures of the supervision tests: a runtime on a fresh schema, and clean per-process logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promissory.runtime import Runtime
from tests.supervision.actors import EVENTS, FAILING, FENCED, TALLY, reset_gates


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    """A started runtime on a fresh schema (activations stay up while idle, for 30 s)."""
    TALLY.clear()
    EVENTS.clear()
    FENCED.clear()
    FAILING.clear()
    with Runtime(dsn) as rt:
        try:
            yield rt
        finally:
            reset_gates()  # a handler still blocked on a gate must not hold up the close
