"""Fixtures of the agent tests: the plugin's runtime on a fresh schema, as ``rt``."""

from __future__ import annotations

import pytest

from promissory.runtime import Runtime


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    """A started runtime on a fresh schema, closed after the test (the plugin's ``runtime``)."""
    return runtime
