"""Bad input to the actor API is refused before anything is written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.errors import ActorExistsError, EncodeError, InvalidIdError
from promissory.runtime import Runtime
from tests.actors.kit import Echo, Item, Items, Nap, Sleeper, one, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    with Runtime(dsn) as rt:
        yield rt


class Loose(msgspec.Struct):
    payload: Any


class Counter(DurableActor[Items]):
    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        self.state = Items([*self.state.items, msg.n])
        return self.state.items

    @handler
    def loose(self, ctx: Context, msg: Loose) -> None:
        pass


@pytest.mark.parametrize(
    "message",
    [object(), Loose(payload=1j), Loose(payload=lambda: 1), {"key": object()}],
    ids=["object", "complex", "function", "nested"],
)
def test_a_message_that_cannot_be_encoded_is_refused_at_send_and_nothing_is_written(
    rt: Runtime, dsn: str, message: Any
) -> None:
    ref = rt.spawn(Counter, id="counter")
    with pytest.raises(EncodeError, match="cannot be encoded"):
        ref.tell(message)
    with pytest.raises(EncodeError, match="cannot be encoded"):
        ref.ask(message)
    assert one(dsn, "SELECT count(*) FROM promises") == 0
    assert ref.ask(Item(1)).get(timeout=5) == [1], "the actor is not affected"


@pytest.mark.parametrize(
    "bad_id", ["", "tab\there", "nul\x00", "x" * 100_000, "\ud800"], ids=lambda v: repr(v)[:12]
)
def test_spawn_with_a_bad_id_is_refused_and_nothing_is_written(
    rt: Runtime, dsn: str, bad_id: str
) -> None:
    with pytest.raises(InvalidIdError):
        rt.spawn(Counter, id=bad_id)
    assert one(dsn, "SELECT count(*) FROM actors") == 0


def test_spawning_an_existing_id_with_another_class_is_refused(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Counter, id="taken")
    assert ref.ask(Item(1)).get(timeout=5) == [1]
    with pytest.raises(ActorExistsError, match="taken"):
        rt.spawn(Echo, id="taken")
    assert one(dsn, "SELECT kind, state FROM actors WHERE id = 'taken'") == (
        Counter.kind(),
        {"items": [1]},
    )
    # The same class again is idempotent: the existing actor, its state untouched.
    again = rt.spawn(Counter, id="taken", state=Items([99]))
    assert again.ask(Item(2)).get(timeout=5) == [1, 2]


@pytest.mark.parametrize(
    "actor_id",
    ["agents/ü🙂/a b", "quotes/'\"/back\\slash", "like/%_/wild*cards", "a"],
    ids=["unicode", "quotes", "wildcards", "short"],
)
def test_unusual_but_valid_ids_work_end_to_end(rt: Runtime, dsn: str, actor_id: str) -> None:
    ref = rt.spawn(Sleeper, id=actor_id)
    reply = ref.ask(Nap(0.05))
    assert reply.get(timeout=5) == f"woke {reply.id}"
    assert reply.id.startswith(actor_id + "/m-")
    assert one(dsn, "SELECT count(*) FROM promises WHERE starts_with(id, %s)", reply.id) == 3


def deep_list(depth: int) -> list[object]:
    root: list[object] = []
    inner = root
    for _ in range(depth - 1):
        child: list[object] = []
        inner.append(child)
        inner = child
    return root


@pytest.mark.parametrize("depth", [300, 994, 1_200])
def test_a_message_nested_too_deep_is_refused_at_send_and_nothing_is_written(
    rt: Runtime, dsn: str, depth: int
) -> None:
    ref = rt.spawn(Counter, id="counter")
    with pytest.raises(EncodeError, match="deep"):
        ref.ask(Loose(payload=deep_list(depth)))
    assert one(dsn, "SELECT count(*) FROM promises") == 0
    assert ref.ask(Item(1)).get(timeout=5) == [1]


GATE = threading.Event()


class Hold(msgspec.Struct):
    pass


class Gated(DurableActor[Items]):
    @handler
    def hold(self, ctx: Context, msg: Hold) -> None:
        GATE.wait(10)

    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        self.state = Items([*self.state.items, msg.n])
        return self.state.items

    @handler
    def loose(self, ctx: Context, msg: Loose) -> None:
        pass


def test_a_stored_message_that_cannot_be_decoded_is_rejected_and_the_mailbox_goes_on(
    dsn: str,
) -> None:
    """A message written past the API (SQL, an older version) that this process cannot decode
    (nested deeper than the actor's thread can follow) is rejected, not a dead mailbox."""
    GATE.clear()
    with Runtime(dsn) as rt:
        ref = rt.spawn(Gated, id="gated")
        ref.tell(Hold())
        bad = ref.tell(Loose(payload=1))
        after = ref.tell(Item(1))
        # The runtime stops with both messages pending (its handler finishes; they wait).
        threading.Timer(0.5, GATE.set).start()
    deep = '{"payload": ' + "[" * 5_000 + "]" * 5_000 + "}"
    sql(dsn, "UPDATE promises SET param = %s::jsonb WHERE id = %s RETURNING id", deep, bad)
    with Runtime(dsn) as rt:
        assert rt.store.wait(after, timeout=10).value_as(list) == [1], "the next is handled"
        assert rt.store.get(bad).state.value == "rejected"
