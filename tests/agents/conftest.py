"""Fixtures of the agent tests: a runtime on a fresh schema, and SQL on its own connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promissory.runtime import Runtime


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    """A started runtime on a fresh schema, closed after the test."""
    runtime = Runtime(dsn).open()
    try:
        yield runtime
    finally:
        runtime.close()
