"""The invariants of ARCHITECTURE.md, each shown on a real runtime and checked through SQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from promissory.actors import Context, DurableActor, RetryPolicy, current_step, handler
from promissory.errors import ActorNotFoundError, ActorStoppedError, PromiseTimedOutError
from promissory.runtime import Runtime
from promissory.store._actors import claim_op
from tests.actors.kit import TALLY, Item, Items, eventually, one, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        yield rt


class Gate:
    """A handler blocks at ``wait`` until the test opens the gate; ``entered`` says it is there."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def wait(self) -> None:
        self.entered.set()
        assert self.open.wait(10), "the test never opened the gate"


GATES: dict[str, Gate] = {}


class Probe(msgspec.Struct):
    dsn: str


class Resume(msgspec.Struct):
    seconds: float


class Blocked(msgspec.Struct):
    n: int


# -- 1. write-ahead ----------------------------------------------------------------------------


def first_result() -> str:
    return "first"


def read_row(dsn: str, step_id: str) -> list[Any]:
    # From a connection of its own: only what is committed is visible here.
    return [list(r) for r in sql(dsn, "SELECT state, value FROM promises WHERE id = %s", step_id)]


class WriteAhead(DurableActor):
    @handler
    def probe(self, ctx: Context, msg: Probe) -> list[Any]:
        ctx.step(first_result)
        rows: list[Any] = ctx.step(read_row, msg.dsn, f"{ctx.message_id}/1")
        return rows

    @handler
    def blocked(self, ctx: Context, msg: Blocked) -> int:
        GATES[ctx.actor_id].wait()
        return msg.n


def test_tell_and_ask_return_only_after_the_message_is_committed(rt: Runtime, dsn: str) -> None:
    gate = GATES["wa/tell"] = Gate()
    ref = rt.spawn(WriteAhead, id="wa/tell")
    first = ref.tell(Blocked(1))
    assert gate.entered.wait(5)
    # The actor is busy with the first message: the next ones are only rows, not yet handled.
    told = ref.tell(Blocked(2))
    assert one(dsn, "SELECT state, param::text FROM promises WHERE id = %s", told) == (
        "pending",
        '{"n": 2}',
    )
    asked = ref.ask(Blocked(3))
    assert one(dsn, "SELECT state, recipient FROM promises WHERE id = %s", asked.id) == (
        "pending",
        "wa/tell",
    )
    gate.open.set()
    assert asked.get(timeout=5) == 3
    assert one(dsn, "SELECT state FROM promises WHERE id = %s", first) == "resolved"


def test_a_step_result_is_committed_before_the_handler_goes_on(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(WriteAhead, id="wa/step")
    assert ref.ask(Probe(dsn)).get(timeout=5) == [["resolved", "first"]]


# -- 2. kept means kept ------------------------------------------------------------------------


def counted(key: str) -> int:
    return TALLY.hit(f"ran:{key}")


class KeptMeansKept(DurableActor):
    @handler
    def resume(self, ctx: Context, msg: Resume) -> int:
        TALLY.hit(f"handler:{ctx.message_id}")
        n: int = ctx.step(counted, ctx.message_id)
        ctx.sleep(msg.seconds)
        return n


def test_a_kept_step_does_not_run_again_when_its_message_is_replayed(rt: Runtime) -> None:
    ref = rt.spawn(KeptMeansKept, id="kept")
    reply = ref.ask(Resume(0.2))
    assert reply.get(timeout=5) == 1
    assert TALLY.counts[f"handler:{reply.id}"] >= 2, "the handler was replayed after the sleep"
    assert TALLY.counts[f"ran:{reply.id}"] == 1


# -- 3. at-least-once effects with an idempotency key ------------------------------------------


def flaky_charge(order: int) -> str:
    step = current_step()
    assert step is not None
    TALLY.log(f"charge:{order}", (step.id, step.attempt, step.idempotency_key))
    if step.attempt < 3:
        raise ConnectionError(f"attempt {step.attempt} lost")
    return f"charged {order} with key {step.idempotency_key}"


class Payer(DurableActor):
    @handler
    def pay(self, ctx: Context, msg: Item) -> str:
        policy = RetryPolicy(max_attempts=5, initial_interval=0.01, jitter=0)
        result: str = ctx.step(flaky_charge, msg.n, retry=policy)
        return result


def test_a_retried_step_sees_the_same_idempotency_key_which_is_its_step_id(
    rt: Runtime,
) -> None:
    ref = rt.spawn(Payer, id="payer")
    reply = ref.ask(Item(7))
    step_id = f"{reply.id}/1"
    assert reply.get(timeout=5) == f"charged 7 with key {step_id}"
    assert TALLY.logs["charge:7"] == [
        (step_id, 1, step_id),
        (step_id, 2, step_id),
        (step_id, 3, step_id),
    ]


# -- 4. state and reply together ---------------------------------------------------------------


class Strict(ValueError):
    pass


class Keeper(DurableActor[Items]):
    reply_errors = (Strict,)

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        self.state = Items([*self.state.items, msg.n])
        if msg.n < 0:
            raise Strict(f"no negative items: {msg.n}")
        return sum(self.state.items)


def test_the_reply_and_the_new_state_are_written_in_one_transaction(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Keeper, id="keeper")
    ref.ask(Item(1)).get(timeout=5)
    reply = ref.ask(Item(2))
    assert reply.get(timeout=5) == 3
    message = one(dsn, "SELECT state, value, xmin::text FROM promises WHERE id = %s", reply.id)
    actor = one(dsn, "SELECT state, xmin::text FROM actors WHERE id = 'keeper'")
    assert message[:2] == ("resolved", 3)
    assert actor[0] == {"items": [1, 2]}
    assert message[2] == actor[1], "the message and the actor row were written by one transaction"


def test_a_handler_that_raises_leaves_the_state_as_it_was(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Keeper, id="keeper")
    ref.ask(Item(5)).get(timeout=5)
    before = one(dsn, "SELECT state, xmin::text FROM actors WHERE id = 'keeper'")
    with pytest.raises(Strict, match="no negative items: -1"):
        ref.ask(Item(-1)).get(timeout=5)
    assert one(dsn, "SELECT state, xmin::text FROM actors WHERE id = 'keeper'") == before
    assert ref.ask(Item(6)).get(timeout=5) == 11, "the next message sees the state without -1"


# -- 5. per-actor order ------------------------------------------------------------------------

INFLIGHT = {"now": 0, "max": 0}
INFLIGHT_LOCK = threading.Lock()


class Ordered(DurableActor[Items]):
    @handler
    def item(self, ctx: Context, msg: Item) -> None:
        with INFLIGHT_LOCK:
            INFLIGHT["now"] += 1
            INFLIGHT["max"] = max(INFLIGHT["max"], INFLIGHT["now"])
        try:
            self.state = Items([*self.state.items, msg.n])
        finally:
            with INFLIGHT_LOCK:
                INFLIGHT["now"] -= 1

    @handler
    def items(self, ctx: Context, msg: Items) -> list[int]:
        return self.state.items


def test_fifty_tells_from_one_thread_are_handled_one_at_a_time_in_order(
    rt: Runtime, dsn: str
) -> None:
    INFLIGHT.update(now=0, max=0)
    ref = rt.spawn(Ordered, id="ordered")
    for n in range(50):
        ref.tell(Item(n))
    assert ref.ask(Items()).get(timeout=10) == list(range(50))
    assert INFLIGHT["max"] == 1
    assert one(dsn, "SELECT state FROM actors WHERE id = 'ordered'") == {"items": list(range(50))}


# -- 6. no orphan waits ------------------------------------------------------------------------


class Waiter(DurableActor[Items]):
    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        if msg.n == 0:
            ctx.promise().result()  # nobody settles it
        self.state = Items([*self.state.items, msg.n])
        return msg.n

    @handler
    def blocked(self, ctx: Context, msg: Blocked) -> int:
        GATES[ctx.actor_id].wait()
        self.state = Items([*self.state.items, msg.n])
        return msg.n


def test_an_ask_to_a_stopped_actor_fails_at_once_with_actor_stopped(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Waiter, id="stopped")
    assert ref.ask(Item(1)).get(timeout=5) == 1
    assert rt.stop("stopped") is True
    started = time.monotonic()
    with pytest.raises(ActorStoppedError, match="stopped"):
        ref.ask(Item(2)).get(timeout=10)
    # At once, not at the get's timeout: the bound leaves a loaded machine its slack.
    assert time.monotonic() - started < 3
    assert one(dsn, "SELECT count(*) FROM promises WHERE recipient = 'stopped'") == 1


def test_an_ask_to_an_actor_that_does_not_exist_fails_at_send(rt: Runtime, dsn: str) -> None:
    with pytest.raises(ActorNotFoundError, match="nobody/here"):
        rt.ref("nobody/here").ask(Item(1))
    assert one(dsn, "SELECT count(*) FROM promises") == 0


def test_messages_pending_when_an_actor_is_stopped_are_rejected(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Waiter, id="waiter")
    suspended = ref.ask(Item(0))
    eventually(lambda: rt.host.suspended_count() == 1, what="the first message suspended")
    queued = [ref.ask(Item(n)) for n in (1, 2)]
    rt.stop("waiter")
    started = time.monotonic()
    for reply in [suspended, *queued]:
        with pytest.raises(ActorStoppedError, match="waiter"):
            reply.get(timeout=10)
    # At once, not at the gets' timeout: the bound leaves a loaded machine its slack.
    assert time.monotonic() - started < 3
    rows = sql(dsn, "SELECT state FROM promises WHERE recipient = 'waiter'")
    assert sorted(r[0] for r in rows) == ["rejected"] * 3
    assert one(dsn, "SELECT status FROM actors WHERE id = 'waiter'") == "stopped"


def test_stopping_an_actor_mid_handler_rejects_the_message_and_drops_what_it_then_writes(
    rt: Runtime, dsn: str
) -> None:
    gate = GATES["busy"] = Gate()
    ref = rt.spawn(Waiter, id="busy")
    assert ref.ask(Item(5)).get(timeout=5) == 5
    reply = ref.ask(Blocked(1))
    assert gate.entered.wait(5)
    started = time.monotonic()
    rt.stop("busy")
    with pytest.raises(ActorStoppedError):
        reply.get(timeout=8)  # answered while the handler still holds its thread
    # Well before the gate gives up (10 s), with slack for a loaded machine.
    assert time.monotonic() - started < 3
    gate.open.set()
    eventually(lambda: rt.host.live_activations() == 0, what="the activation ended")
    assert one(dsn, "SELECT state FROM promises WHERE id = %s", reply.id) == "rejected"
    assert one(dsn, "SELECT state FROM actors WHERE id = 'busy'") == {"items": [5]}


# -- 7. one activation -------------------------------------------------------------------------


def mark(label: str) -> str:
    TALLY.hit(f"mark:{label}")
    return label


def gated(actor_id: str, n: int) -> int:
    run = TALLY.hit(f"gated:{actor_id}:{n}")
    if run == 1 and n == 1:
        GATES[actor_id].wait()
    return run


class Fenced(DurableActor[Items]):
    """Each value it writes says which run of the handler wrote it: 1 is the stale one."""

    @handler
    def item(self, ctx: Context, msg: Item) -> int:
        ctx.step(mark, f"{ctx.actor_id}/{msg.n}")
        run: int = ctx.step(gated, ctx.actor_id, msg.n)
        self.state = Items([*self.state.items, run])
        return run

    @handler
    def blocked(self, ctx: Context, msg: Blocked) -> int:
        run = TALLY.hit(f"run:{ctx.message_id}")
        self.state = Items([*self.state.items, run])
        if run == 1 and msg.n == 1:
            GATES[ctx.actor_id].wait()
        return run


def _epoch(dsn: str, actor_id: str) -> int:
    return int(one(dsn, "SELECT epoch FROM actors WHERE id = %s", actor_id))


def test_a_stale_activation_cannot_keep_a_step_once_a_newer_one_claimed_the_actor(
    rt: Runtime, dsn: str
) -> None:
    gate = GATES["fenced/step"] = Gate()
    ref = rt.spawn(Fenced, id="fenced/step")
    reply = ref.ask(Item(1))
    assert gate.entered.wait(5)
    epoch = _epoch(dsn, "fenced/step")
    # A newer activation claims the actor behind the running one's back.
    newer = rt.store.execute(claim_op("fenced/step", rt.node_id))  # type: ignore[union-attr]
    assert newer.epoch == epoch + 1
    gate.open.set()
    second = ref.ask(Item(2))  # work for a next activation, whichever starts
    # Run 1 (stale) kept nothing: its step result would have been 1, and a kept step never
    # changes, so the replay would have returned it. Run 2 kept its own.
    assert reply.get(timeout=5) == 2
    assert one(dsn, "SELECT value FROM promises WHERE id = %s", f"{reply.id}/2") == 2
    assert TALLY.counts["mark:fenced/step/1"] == 1, "the kept step stayed kept"
    assert TALLY.counts["gated:fenced/step:1"] == 2, "the unkept step ran again"
    assert second.get(timeout=5) == 1
    assert one(dsn, "SELECT state FROM actors WHERE id = 'fenced/step'") == {"items": [2, 1]}
    assert _epoch(dsn, "fenced/step") >= epoch + 2


def test_a_stale_activation_cannot_settle_its_message_or_write_its_state(
    rt: Runtime, dsn: str
) -> None:
    gate = GATES["fenced/done"] = Gate()
    ref = rt.spawn(Fenced, id="fenced/done")
    reply = ref.ask(Blocked(1))
    assert gate.entered.wait(5)
    rt.store.execute(claim_op("fenced/done", rt.node_id))  # type: ignore[union-attr]
    gate.open.set()
    last = ref.ask(Blocked(2))
    assert reply.get(timeout=5) == 2, "the reply is the newer activation's"
    assert last.get(timeout=5) == 1
    assert TALLY.counts[f"run:{reply.id}"] == 2
    assert one(dsn, "SELECT state FROM actors WHERE id = 'fenced/done'") == {"items": [2, 1]}


class Sequenced(DurableActor[Items]):
    @handler
    def resume(self, ctx: Context, msg: Resume) -> list[int]:
        ctx.sleep(msg.seconds)
        self.state = Items([*self.state.items, -1])
        return self.state.items

    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        self.state = Items([*self.state.items, msg.n])
        return self.state.items


def test_a_message_behind_a_suspended_one_waits_for_it(rt: Runtime) -> None:
    ref = rt.spawn(Sequenced, id="sequenced")
    # Long enough that the second message arrives while the first still sleeps, however
    # slowly a loaded machine gets there.
    sleeping = ref.ask(Resume(2.0))
    eventually(lambda: rt.host.suspended_count() == 1, what="the first message suspended")
    behind = ref.ask(Item(1))
    assert sleeping.get(timeout=30) == [-1]
    assert behind.get(timeout=30) == [-1, 1]


def test_a_message_whose_deadline_passes_before_its_turn_times_out_and_is_never_handled(
    rt: Runtime, dsn: str
) -> None:
    gate = GATES["deadline"] = Gate()
    ref = rt.spawn(WriteAhead, id="deadline")
    busy = ref.ask(Blocked(1))
    assert gate.entered.wait(5)
    # The clock starts before the send: its deadline counts from when the message is made.
    started = time.monotonic()
    late = ref.ask(Blocked(2), timeout=0.2)
    with pytest.raises(PromiseTimedOutError):
        late.get(timeout=8)
    # At its deadline, not when the busy message lets go (the gate's 10 s); the upper bound
    # leaves a loaded machine its slack.
    assert 0.15 <= time.monotonic() - started < 4
    gate.open.set()
    assert busy.get(timeout=5) == 1
    assert ref.ask(Blocked(3)).get(timeout=5) == 3, "the actor went on past the late message"
    assert one(dsn, "SELECT state, value FROM promises WHERE id = %s", late.id) == (
        "rejected_timedout",
        None,
    )


def test_a_repeated_send_with_the_same_message_id_is_handled_once(rt: Runtime, dsn: str) -> None:
    ref = rt.spawn(Keeper, id="keeper")
    first = ref.tell(Item(4), id="keeper/orders/1")
    again = ref.ask(Item(4), id="keeper/orders/1")
    assert first == again.id == "keeper/orders/1"
    assert again.get(timeout=5) == 4
    assert ref.ask(Item(0)).get(timeout=5) == 4, "4 was added once"
    assert one(dsn, "SELECT count(*) FROM promises WHERE recipient = 'keeper'") == 2


def test_waiting_on_a_reply_that_is_still_legitimately_pending_times_out_for_the_caller_only(
    rt: Runtime,
) -> None:
    ref = rt.spawn(Waiter, id="waiter")
    reply = ref.ask(Item(0))  # waits on a promise nobody settles: pending, not orphaned
    with pytest.raises(TimeoutError):
        reply.get(timeout=0.1)
    assert not reply.done()
    # The caller's timeout may come before the handler got to its wait on a loaded machine.
    eventually(lambda: rt.host.suspended_count() == 1, what="the handler suspended")
    assert not reply.done()


def test_sends_racing_a_stop_are_refused_or_rejected_and_none_is_left_pending(
    rt: Runtime, dsn: str
) -> None:
    ref = rt.spawn(Keeper, id="raced")
    sent: list[Any] = []
    refused: list[int] = []

    def send_until_refused(k: int) -> None:
        for i in range(10_000):
            try:
                sent.append(ref.ask(Item(k * 10_000 + i)))
            except ActorStoppedError:
                refused.append(k)
                return

    senders = [threading.Thread(target=send_until_refused, args=(k,)) for k in range(4)]
    for t in senders:
        t.start()
    eventually(lambda: len(sent) >= 40, what="messages on their way")
    rt.stop("raced")
    for t in senders:
        t.join(10)
    assert sorted(refused) == [0, 1, 2, 3], "every sender was refused once the actor stopped"
    outcomes = {"handled": 0, "stopped": 0}
    for reply in sent:
        try:
            reply.get(timeout=5)
            outcomes["handled"] += 1
        except ActorStoppedError:
            outcomes["stopped"] += 1
    assert outcomes["handled"] + outcomes["stopped"] == len(sent)
    assert one(dsn, "SELECT count(*) FROM promises WHERE state = 'pending'") == 0
