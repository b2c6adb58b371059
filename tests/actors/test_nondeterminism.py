"""A replay that asks for other durable operations than the journal holds fails loudly."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.errors import NondeterminismError
from promissory.runtime import Runtime
from tests.actors.kit import TALLY, eventually, one


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        yield rt


PHASE = {"now": "before"}
"""Flipped by the test while the handler is suspended: the code "changed" between runs."""


class Drift(msgspec.Struct):
    change: str


def lookup(key: str) -> str:
    TALLY.hit(f"lookup:{key}")
    return key.upper()


class Drifter(DurableActor):
    @handler
    def drift(self, ctx: Context, msg: Drift) -> str:
        before = PHASE["now"] == "before"
        if msg.change == "name":
            ctx.step(lookup, "k", name="fetch" if before else "fetch_v2")
        elif msg.change == "arguments":
            ctx.step(lookup, "k" if before else "other")
        elif msg.change == "kind":
            if before:
                ctx.step(lookup, "k")
            else:
                ctx.now()
        ctx.sleep(0.3)
        return "done"


@pytest.mark.parametrize("change", ["name", "arguments", "kind"])
def test_a_replay_whose_steps_changed_fails_with_nondeterminism_naming_the_step(
    rt: Runtime, dsn: str, change: str
) -> None:
    PHASE["now"] = "before"
    ref = rt.spawn(Drifter, id="drifter")
    reply = ref.ask(Drift(change))
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    PHASE["now"] = "after"
    step_id = f"{reply.id}/1"
    with pytest.raises(NondeterminismError, match=f"step {step_id} ") as caught:
        reply.get(timeout=5)
    assert caught.value.step_id == step_id
    assert TALLY.counts["lookup:k"] == 1
    assert TALLY.counts["lookup:other"] == 0, "the changed step did not run"
    assert one(dsn, "SELECT state FROM promises WHERE id = %s", step_id) == "resolved"
