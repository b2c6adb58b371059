"""Fixtures of the cancellation tests: the plugin's runtime, and clean per-process marks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.register_assert_rewrite("tests.cancel.checks", "tests.cancel.kit")

from promissory.runtime import Runtime  # noqa: E402
from tests.cancel import kit  # noqa: E402


@pytest.fixture
def rt(runtime: Runtime) -> Iterator[Runtime]:
    """The plugin's runtime on a fresh schema, with clean marks (gates opened before it is
    closed: a handler still blocked on a gate must not hold up the close).
    """
    kit.reset()
    try:
        yield runtime
    finally:
        kit.reset()
