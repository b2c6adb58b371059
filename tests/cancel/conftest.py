"""Fixtures of the cancellation tests: a runtime on a fresh schema, and clean per-process marks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("tests.cancel.checks", "tests.cancel.kit")

from promissory.runtime import Runtime  # noqa: E402
from tests.cancel import kit  # noqa: E402


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    """A started runtime on a fresh schema, closed after the test (gates opened first)."""
    kit.reset()
    runtime = Runtime(dsn).open()
    try:
        yield runtime
    finally:
        kit.reset()  # a handler still blocked on a gate must not hold up the close
        runtime.close()
