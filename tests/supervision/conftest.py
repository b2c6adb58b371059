"""Fixtures of the supervision tests: the plugin's runtime, and clean per-process logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promissory.runtime import Runtime
from tests.supervision.actors import EVENTS, FAILING, FENCED, TALLY, reset_gates


@pytest.fixture
def rt(runtime: Runtime) -> Iterator[Runtime]:
    """The plugin's runtime on a fresh schema, with clean per-process logs (gates opened
    before it is closed: a handler still blocked on a gate must not hold up the close).
    """
    TALLY.clear()
    EVENTS.clear()
    FENCED.clear()
    FAILING.clear()
    try:
        yield runtime
    finally:
        reset_gates()
