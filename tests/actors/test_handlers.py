"""Handlers: typed and absent state, lookup by message type, replies, reply errors and crashes."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from promissory.actors import (
    ChildSpec,
    Context,
    DurableActor,
    Restart,
    UnknownMessageError,
    handler,
)
from promissory.errors import ActorStoppedError, EncodeError
from promissory.runtime import Runtime
from tests.actors.kit import TALLY, Item, Items, one, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn) as rt:
        yield rt


class Account(msgspec.Struct):
    owner: str
    balance: int = 0
    history: list[int] = []


class Deposit(msgspec.Struct):
    amount: int


class Statement(msgspec.Struct):
    pass


class Rename(msgspec.Struct):
    owner: str


class Bank(DurableActor[Account]):
    @handler
    def deposit(self, ctx: Context, msg: Deposit) -> int:
        assert isinstance(self.state, Account)
        self.state = Account(
            self.state.owner, self.state.balance + msg.amount, [*self.state.history, msg.amount]
        )
        return self.state.balance

    @handler
    def statement(self, ctx: Context, msg: Statement) -> Account:
        assert isinstance(self.state, Account), "the state is restored as its Struct type"
        return self.state

    @handler
    def rename(self, ctx: Context, msg: Rename) -> str:
        self.state = Account(msg.owner, self.state.balance, self.state.history)
        return f"renamed to {msg.owner}"

    @handler
    def note(self, ctx: Context, msg: str) -> str:
        return f"{self.state.owner} noted {msg!r}"

    @handler
    def count(self, ctx: Context, msg: int) -> int:
        return self.state.balance * msg


def test_a_typed_state_is_restored_as_its_struct_after_the_runtime_is_reopened(dsn: str) -> None:
    with Runtime(dsn) as rt:
        ref = rt.spawn(Bank, id="bank/alice", state=Account("alice"))
        assert ref.ask(Deposit(30)).get(timeout=5) == 30
        assert ref.ask(Deposit(12)).get(timeout=5) == 42
    assert one(dsn, "SELECT state FROM actors WHERE id = 'bank/alice'") == {
        "owner": "alice",
        "balance": 42,
        "history": [30, 12],
    }
    with Runtime(dsn) as rt:
        statement = rt.ref("bank/alice").ask(Statement()).get(timeout=5, type=Account)
        assert statement == Account("alice", 42, [30, 12])
        assert rt.ref("bank/alice").ask(Deposit(8)).get(timeout=5) == 50


def test_each_message_type_finds_its_own_handler(rt: Runtime) -> None:
    ref = rt.spawn(Bank, id="bank/bob", state=Account("bob", 5))
    assert ref.ask(Deposit(5)).get(timeout=5) == 10
    assert ref.ask(Rename("robert")).get(timeout=5) == "renamed to robert"
    assert ref.ask("hello").get(timeout=5) == "robert noted 'hello'"
    assert ref.ask(3).get(timeout=5) == 30
    assert ref.ask(Statement()).get(timeout=5, type=Account) == Account("robert", 10, [5])


def test_a_message_of_a_type_with_no_handler_is_rejected_and_the_actor_carries_on(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Bank, id="bank/carol", state=Account("carol"))
    assert ref.ask(Deposit(1)).get(timeout=5) == 1
    with pytest.raises(
        UnknownMessageError, match="Bank has no handler for messages of type 'Item'"
    ):
        ref.ask(Item(1)).get(timeout=5)
    assert ref.ask(Deposit(2)).get(timeout=5) == 3
    assert one(dsn, "SELECT status, restarts FROM actors WHERE id = 'bank/carol'") == ("running", 0)


class Stateless(DurableActor):
    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        assert self.state is None
        return msg.n * 2


def test_an_actor_without_a_state_type_has_no_state(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Stateless, id="stateless")
    assert Stateless.state_type is None
    assert ref.ask(Item(21)).get(timeout=5) == 42
    assert ref.ask(Item(1)).get(timeout=5) == 2
    assert one(dsn, "SELECT state FROM actors WHERE id = 'stateless'") is None


class Unreplyable(DurableActor[Items]):
    @handler
    def item(self, ctx: Context, msg: Item) -> object:
        self.state = Items([*self.state.items, msg.n])
        if msg.n < 0:
            return object()
        return msg.n


def test_a_reply_that_cannot_be_encoded_fails_the_ask_with_encode_error(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Unreplyable, id="unreplyable")
    assert ref.ask(Item(1)).get(timeout=5) == 1
    with pytest.raises(EncodeError, match="reply of item"):
        ref.ask(Item(-1)).get(timeout=5)
    assert one(dsn, "SELECT state FROM actors WHERE id = 'unreplyable'") == {"items": [1]}


# -- reply errors and crashes ------------------------------------------------------------------


class OutOfStock(Exception):
    pass


class Boom(RuntimeError):
    pass


class Shop(DurableActor[Items]):
    reply_errors = (OutOfStock, KeyError)

    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        TALLY.hit(f"{ctx.actor_id}:{msg.n}")
        self.state = Items([*self.state.items, msg.n])
        if msg.n == 0:
            raise OutOfStock("nothing left of item 0")
        if msg.n == 1:
            raise KeyError("item 1")
        if msg.n == 13 and TALLY.counts[f"{ctx.actor_id}:13"] == 1:
            raise Boom("a transient failure")
        if msg.n == 666:
            raise Boom("a permanent failure")
        return self.state.items


def test_a_listed_reply_error_rejects_only_its_message_and_keeps_the_state(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Shop, id="shop/reply")
    assert ref.ask(Item(5)).get(timeout=5) == [5]
    with pytest.raises(OutOfStock, match="nothing left of item 0"):
        ref.ask(Item(0)).get(timeout=5)
    with pytest.raises(KeyError, match="item 1"):
        ref.ask(Item(1)).get(timeout=5)
    assert ref.ask(Item(6)).get(timeout=5) == [5, 6]
    assert one(dsn, "SELECT status, restarts, state FROM actors WHERE id = 'shop/reply'") == (
        "running",
        0,
        {"items": [5, 6]},
    )


def test_a_crash_restarts_the_actor_and_retries_the_message_from_the_last_state(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Shop, id="shop/transient")
    assert ref.ask(Item(5)).get(timeout=5) == [5]
    reply = ref.ask(Item(13))
    assert reply.get(timeout=5) == [5, 13], "the retry starts from the state before the crash"
    assert TALLY.counts["shop/transient:13"] == 2
    assert one(dsn, "SELECT status, restarts FROM actors WHERE id = 'shop/transient'") == (
        "running",
        1,
    )
    assert ref.ask(Item(7)).get(timeout=5) == [5, 13, 7]


def test_a_second_crash_within_the_period_gives_the_actor_up_and_rejects_its_mailbox(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Shop, id="shop/permanent")
    assert ref.ask(Item(5)).get(timeout=5) == [5]
    failing = ref.ask(Item(666))
    behind = [ref.ask(Item(n)) for n in (7, 8)]
    with pytest.raises(Boom, match="a permanent failure"):
        failing.get(timeout=5)
    assert TALLY.counts["shop/permanent:666"] == 2, "tried once more after the first crash"
    for reply in behind:
        # Rejected with the actor's failure, never handled.
        with pytest.raises(Boom, match="a permanent failure"):
            reply.get(timeout=5)
    assert TALLY.counts["shop/permanent:7"] == 0
    assert one(dsn, "SELECT status, state FROM actors WHERE id = 'shop/permanent'") == (
        "failed",
        {"items": [5]},
    )
    rows = sql(dsn, "SELECT state FROM promises WHERE recipient = 'shop/permanent' ORDER BY seq")
    assert [r[0] for r in rows] == ["resolved", "rejected", "rejected", "rejected"]
    with pytest.raises(ActorStoppedError):
        ref.tell(Item(9))


@pytest.mark.parametrize(
    ("spec", "restarts"),
    [
        (ChildSpec(intensity=0), 0),
        (ChildSpec(restart=Restart.TEMPORARY, intensity=5), 0),
        (ChildSpec(intensity=3, period=30), 3),
    ],
    ids=["intensity-0", "temporary", "intensity-3"],
)
def test_a_top_level_actor_is_restarted_as_often_as_its_child_spec_allows(
    rt: Runtime, dsn: str, spec: ChildSpec, restarts: int
) -> None:
    ref = rt.spawn(Shop, id="shop/spec", spec=spec)
    with pytest.raises(Boom, match="a permanent failure"):
        ref.ask(Item(666)).get(timeout=5)
    assert TALLY.counts["shop/spec:666"] == restarts + 1
    assert one(dsn, "SELECT status, restarts FROM actors WHERE id = 'shop/spec'") == (
        "failed",
        restarts,
    )
