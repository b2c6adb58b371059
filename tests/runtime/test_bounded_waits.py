"""Bounded waits while the database is away (issue 13, item 13): every call that takes a timeout
returns within it, with a clear error, and the outage is told once, not a page of warnings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.errors import StoreUnavailableError
from promissory.runtime import Runtime
from tests.store.test_connection_loss import FlakyProxy


class Ping(msgspec.Struct):
    n: int


class Echo(DurableActor[None]):
    @handler
    def ping(self, ctx: Context, msg: Ping) -> int:
        return msg.n


@pytest.fixture
def proxy(dsn: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(dsn)
    try:
        yield flaky
    finally:
        flaky.close()


@pytest.mark.timeout(90)
def test_an_ask_and_its_get_return_within_their_timeouts_during_an_outage(
    proxy: FlakyProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with Runtime(proxy.dsn, reconnect_timeout=30) as rt:
        ref = rt.spawn(Echo, id="echo")
        assert ref.ask(Ping(1)).get(timeout=10) == 1
        proxy.go_down()
        started = time.monotonic()
        with pytest.raises((StoreUnavailableError, TimeoutError)) as failed:
            ref.ask(Ping(2), timeout=5).get(timeout=3)
        took = time.monotonic() - started
        assert took < 5 + 3 + 1.0, f"took {took:.1f} s"
        assert "within" in str(failed.value) or "unreachable" in str(failed.value)
        # Any wait on a promise is bounded as well, and says why it gave up.
        assert rt.store is not None
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="the database is unreachable"):
            rt.store.wait("echo/elsewhere", timeout=2)
        assert time.monotonic() - started < 2 + 1.0
        time.sleep(10 - (time.monotonic() - started))
        proxy.come_back()
        assert ref.ask(Ping(4)).get(timeout=30) == 4
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    store_lines = [r.getMessage() for r in warnings if "promissory store" in r.getMessage()]
    assert len([m for m in store_lines if "answers again" not in m]) == 1, store_lines
    assert any("answers again" in m for m in store_lines), store_lines
