"""Fixtures of the schedule tests: a runtime whose scheduler looks every 0.2 s at most."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promissory.runtime import Runtime


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    """A started runtime on a fresh schema, closed after the test."""
    runtime = Runtime(dsn, schedule_poll=0.2).open()
    try:
        yield runtime
    finally:
        runtime.close()
