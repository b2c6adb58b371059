"""A canceled handler may clean up with durable steps, within ``Runtime(cleanup_timeout=…)``;
after that its durable operations raise ``Canceled`` for good."""

from __future__ import annotations

import time

import msgspec
import pytest

from promissory.actors import Canceled, Context, DurableActor, handler
from promissory.errors import InvalidInputError, PromiseCanceledError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.kit import eventually, sql

SEEN: list[str] = []


class Tidy(msgspec.Struct, frozen=True):
    steps: int


def tidy_up(i: int) -> int:
    time.sleep(0.1)
    return i


class Tidier(DurableActor[None]):
    """Waits for its cancel, then tries ``steps`` cleanup steps of 0.1 s each."""

    @handler
    def work(self, ctx: Context, msg: Tidy) -> None:
        try:
            ctx.sleep(60)
        except Canceled:
            for i in range(msg.steps):
                try:
                    ctx.step(tidy_up, i, name="tidy")
                except Canceled as again:
                    SEEN.append(f"cut at {i}: {again}")
                    raise
                SEEN.append(f"tidied {i}")
            raise


def test_cleanup_gets_cleanup_timeout_seconds_then_canceled_for_good(dsn: str) -> None:
    kit.reset()
    SEEN.clear()
    # A second of cleanup: room for several 0.1 s steps even on a loaded machine, and far
    # from the fifty the handler would take.
    with Runtime(dsn, cleanup_timeout=1.0) as rt:
        ref = rt.spawn(Tidier, id="tidier")
        future = ref.ask(Tidy(steps=50), id="tidier/m/1")
        eventually(
            lambda: sql(dsn, "SELECT 1 FROM promises WHERE kind = 'timer' AND state = 'pending'"),
            what="the handler sleeping",
        )
        assert rt.cancel("tidier/m/1", reason="enough")
        with pytest.raises(PromiseCanceledError):
            future.get(timeout=10)
        eventually(lambda: SEEN and SEEN[-1].startswith("cut at"), what="the cleanup cut off")

    tidied = [s for s in SEEN if s.startswith("tidied")]
    # 1 s of 0.1 s steps: some kept (no more than eleven can start in time), then the next
    # one refused, long before 50.
    assert 2 <= len(tidied) <= 12, SEEN
    assert SEEN[-1] == f"cut at {len(tidied)}: enough (and the time to clean up is over)"
    kept = sql(dsn, "SELECT count(*) FROM promises WHERE id LIKE 'tidier/m/1/%%' AND kind = 'step'")
    assert kept == [(len(tidied),)]


def test_a_negative_cleanup_timeout_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cleanup_timeout must be ≥ 0 seconds, not -1"):
        Runtime(cleanup_timeout=-1)
