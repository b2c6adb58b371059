"""Reading actors from outside and knowing where a step is in its actor's life (issue 14,
items 6, 11 and 12): ``rt.state``, ids checked before any SQL, ``StepInfo.incarnation``."""

from __future__ import annotations

import threading

import msgspec
import pytest

from promissory import (
    ChildSpec,
    Context,
    DurableActor,
    Restart,
    Runtime,
    StepInfo,
    current_step,
    handler,
)
from promissory.errors import ActorNotFoundError, DecodeError, InvalidIdError, InvalidInputError
from promissory.store import Store


class Count(msgspec.Struct):
    n: int = 0


class Add(msgspec.Struct):
    by: int


class Counter(DurableActor[Count]):
    @handler
    def add(self, ctx: Context, msg: Add) -> int:
        self.state = Count(self.state.n + msg.by)
        return self.state.n


def test_state_reads_an_actor_s_kept_snapshot_as_the_type_asked(dsn: str) -> None:
    with Runtime(dsn) as rt:
        counter = rt.spawn(Counter, id="counters/main")
        counter.ask(Add(by=2)).get(timeout=10)
        counter.ask(Add(by=3)).get(timeout=10)

        assert rt.state("counters/main", Count) == Count(5)
        assert rt.state("counters/main") == {"n": 5}
        with pytest.raises(DecodeError):
            rt.state("counters/main", list[int])


def test_state_is_none_for_an_actor_that_kept_none(dsn: str) -> None:
    class Stateless(DurableActor[None]):
        @handler
        def add(self, ctx: Context, msg: Add) -> int:
            return msg.by

    with Runtime(dsn) as rt:
        rt.spawn(Stateless, id="stateless").ask(Add(by=1)).get(timeout=10)

        assert rt.state("stateless") is None


def test_state_of_an_actor_that_does_not_exist_raises_actor_not_found(dsn: str) -> None:
    with Runtime(dsn) as rt, pytest.raises(ActorNotFoundError, match="no/such"):
        rt.state("no/such")


@pytest.mark.parametrize("bad_id", ["", "a\x00b", "x" * 5000, "tab\there"])
@pytest.mark.parametrize("method", ["stop", "state", "ref"])
def test_stop_state_and_ref_refuse_an_unusable_actor_id_before_any_sql(
    dsn: str, method: str, bad_id: str
) -> None:
    with Runtime(dsn) as rt, pytest.raises(InvalidIdError):
        getattr(rt, method)(bad_id)


def test_search_refuses_a_limit_past_the_largest_page(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="limit must be between 1 and"):
        store.search(limit=10**20)


# -- StepInfo.incarnation ----------------------------------------------------------------------

seen: list[StepInfo] = []
fail_first = threading.Event()


def charge(order: int) -> str:
    step = current_step()
    assert step is not None
    seen.append(step)
    if fail_first.is_set():
        fail_first.clear()
        raise RuntimeError("card declined")  # no retry policy: the actor crashes
    return f"charged {order}"


class Biller(DurableActor[None]):
    @handler
    def bill(self, ctx: Context, msg: Add) -> str:
        return str(ctx.step(charge, msg.by))


def test_a_step_tried_again_by_the_next_incarnation_says_so_in_its_step_info(dsn: str) -> None:
    seen.clear()
    fail_first.set()
    with Runtime(dsn) as rt:
        spec = ChildSpec(restart=Restart.TRANSIENT, intensity=3, period=60)
        reply = rt.spawn(Biller, id="biller", spec=spec).ask(Add(by=7))

        assert reply.get(timeout=20) == "charged 7"

    first, second = seen
    assert (first.attempt, first.incarnation) == (1, 0)
    # The crash kept the failure; the restarted actor tried the step as a new one, under ~1,
    # and its attempts count from 1 again.
    assert (second.attempt, second.incarnation) == (1, 1)
    assert second.id == first.id + "~1"
    assert second.idempotency_key == second.id
