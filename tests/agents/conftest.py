"""Fixtures of the agent tests: the plugin's runtime on a fresh schema, as ``rt``, and a fake
model provider on loopback, as ``fake``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promissory.runtime import Runtime
from tests.agents.fake_llm import FakeProvider


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    """A started runtime on a fresh schema, closed after the test (the plugin's ``runtime``)."""
    return runtime


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    """A fake provider on 127.0.0.1, and no proxy between it and the client."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = FakeProvider()
    try:
        yield server
    finally:
        server.close()
