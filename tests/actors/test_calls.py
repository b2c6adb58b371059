"""Actors talking to actors from a handler: call, send, fan-out with gather, spawn."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest

from promissory.actors import Context, DurableActor, handler
from promissory.errors import ActorNotFoundError, ActorStoppedError, ChildFailedError
from promissory.runtime import Runtime
from tests.actors.kit import TALLY, Items, eventually, one, sql


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    TALLY.clear()
    with Runtime(dsn, suspend_after=0.02) as rt:
        yield rt


class Work(msgspec.Struct):
    n: int
    delay: float = 0.0


class Note(msgspec.Struct):
    text: str


class CallOne(msgspec.Struct):
    target: str
    n: int


class FanOut(msgspec.Struct):
    targets: list[str]
    works: list[Work]


class SendNote(msgspec.Struct):
    target: str
    text: str


class Adopt(msgspec.Struct):
    child: str


class Doubler(DurableActor):
    reply_errors = (ValueError,)

    @handler
    def work(self, ctx: Context, msg: Work) -> int:
        TALLY.hit(f"work:{ctx.actor_id}:{msg.n}")
        if msg.delay:
            ctx.sleep(msg.delay)
        if msg.n < 0:
            raise ValueError(f"cannot double {msg.n}")
        return msg.n * 2


class Recorder(DurableActor[Items]):
    @handler
    def note(self, ctx: Context, msg: Note) -> None:
        self.state = Items([*self.state.items, len(msg.text)])

    @handler
    def items(self, ctx: Context, msg: Items) -> list[int]:
        return self.state.items


class Caller(DurableActor):
    @handler
    def call_one(self, ctx: Context, msg: CallOne) -> int:
        TALLY.hit(f"caller:{ctx.message_id}")
        result: int = ctx.call(msg.target, Work(msg.n), returns=int)
        return result + 1

    @handler
    def fan_out(self, ctx: Context, msg: FanOut) -> list[int] | str:
        calls = [ctx.start_call(t, w) for t, w in zip(msg.targets, msg.works, strict=True)]
        try:
            results: list[int] = ctx.gather(*calls, returns=int)
        except ValueError as exc:
            return f"failed: {exc}"
        return results

    @handler
    def send_note(self, ctx: Context, msg: SendNote) -> str:
        TALLY.hit(f"sender:{ctx.message_id}")
        sent = ctx.send(msg.target, Note(msg.text))
        # Long enough past suspend_after that it suspends (and is replayed) however slowly
        # the handler gets here: a timer already due by then would be waited out in-thread.
        ctx.sleep(1.0)
        return sent

    @handler
    def adopt(self, ctx: Context, msg: Adopt) -> str:
        TALLY.hit(f"parent:{ctx.message_id}")
        child = ctx.spawn(Doubler, id=msg.child)
        ctx.promise(id=f"go/{msg.child}").result()
        try:
            return f"child says {ctx.call(child, Work(21), returns=int)}"
        except ActorStoppedError:
            return "child is stopped"


def test_call_asks_another_actor_and_returns_its_reply(rt: Runtime, dsn: str) -> None:
    rt.spawn(Doubler, id="doubler")
    reply = rt.spawn(Caller, id="caller").ask(CallOne("doubler", 20))
    assert reply.get(timeout=5) == 41
    # The call is a message to the callee, kept as the caller's step.
    assert one(
        dsn, "SELECT recipient, state, value FROM promises WHERE id = %s", f"{reply.id}/1"
    ) == ("doubler", "resolved", 40)
    assert TALLY.counts["work:doubler:20"] == 1


def test_send_tells_another_actor_once_even_when_the_sender_is_replayed(
    rt: Runtime, dsn: str
) -> None:
    recorder = rt.spawn(Recorder, id="recorder")
    reply = rt.spawn(Caller, id="caller").ask(SendNote("recorder", "hello"))
    assert reply.get(timeout=30) == f"{reply.id}/1"
    assert TALLY.counts[f"sender:{reply.id}"] == 2, "replayed after its sleep"
    assert recorder.ask(Items()).get(timeout=5) == [5]
    assert one(dsn, "SELECT count(*) FROM promises WHERE recipient = 'recorder'") == 2


def test_gather_returns_the_replies_of_a_fan_out_in_argument_order(rt: Runtime, dsn: str) -> None:
    targets = [f"doublers/{i}" for i in range(3)]
    for t in targets:
        rt.spawn(Doubler, id=t)
    # The first callee answers last, the last first. The delays are far apart and long
    # against a loaded machine's overhead: one after another they would take 3 s.
    works = [Work(1, 1.5), Work(2, 1.0), Work(3, 0.5)]
    started = time.monotonic()
    reply = rt.spawn(Caller, id="caller").ask(FanOut(targets, works))
    assert reply.get(timeout=30) == [2, 4, 6]
    assert time.monotonic() - started < 2.7, "the three calls ran at once"
    rows = sql(
        dsn,
        "SELECT id FROM promises WHERE id LIKE %s AND kind = 'message' ORDER BY settled_at",
        f"{reply.id}/%",
    )
    assert [r[0] for r in rows] == [f"{reply.id}/3", f"{reply.id}/2", f"{reply.id}/1"]


def test_gather_raises_the_error_of_a_failing_callee(rt: Runtime) -> None:
    targets = [f"doublers/{i}" for i in range(3)]
    for t in targets:
        rt.spawn(Doubler, id=t)
    works = [Work(1), Work(-2), Work(3)]
    reply = rt.spawn(Caller, id="caller").ask(FanOut(targets, works))
    assert reply.get(timeout=5) == "failed: cannot double -2"


def test_a_spawned_child_is_spawned_once_and_not_again_on_replay(rt: Runtime, dsn: str) -> None:
    rt.spawn(Caller, id="parent")
    reply = rt.ref("parent").ask(Adopt("parent/child"))
    eventually(lambda: rt.host.suspended_count() == 1, what="the parent waits")
    assert one(dsn, "SELECT parent, kind, status FROM actors WHERE id = 'parent/child'") == (
        "parent",
        Doubler.kind(),
        "running",
    )
    # Stop the child while its parent waits: a spawn run again on replay would revive it.
    rt.stop("parent/child")
    rt.store.resolve("go/parent/child")  # type: ignore[union-attr]
    assert reply.get(timeout=5) == "child is stopped"
    assert TALLY.counts[f"parent:{reply.id}"] == 2
    assert one(dsn, "SELECT status FROM actors WHERE id = 'parent/child'") == "stopped"
    assert one(dsn, "SELECT value FROM promises WHERE id = %s", f"{reply.id}/1") == {
        "actor": "parent/child"
    }


class CallGhost(msgspec.Struct):
    pass


class Broken(msgspec.Struct):
    n: int


class Fragile(DurableActor):
    @handler
    def broken(self, ctx: Context, msg: Broken) -> int:
        raise RuntimeError(f"fragile broke on {msg.n}")


class Prober(DurableActor):
    @handler
    def call_ghost(self, ctx: Context, msg: CallGhost) -> list[str]:
        try:
            ctx.call("ghost", Work(1))
        except ActorNotFoundError as exc:
            TALLY.log("ghost", str(exc))
        ctx.promise(id="go/ghost").result()
        return TALLY.logs["ghost"]

    @handler
    def broken(self, ctx: Context, msg: Broken) -> list[str]:
        child = ctx.spawn(Fragile, id=f"{ctx.actor_id}/fragile")
        try:
            ctx.call(child, msg)
        except ChildFailedError as exc:
            return [type(exc).__name__, str(exc.child_id), repr(exc.cause)]
        return []


def test_a_call_to_an_actor_that_does_not_exist_fails_the_same_way_on_replay(
    rt: Runtime, dsn: str
) -> None:
    reply = rt.spawn(Prober, id="prober").ask(CallGhost())
    eventually(lambda: rt.host.suspended_count() == 1, what="the prober waits")
    rt.spawn(Doubler, id="ghost")  # exists by the time the handler is replayed
    rt.store.resolve("go/ghost")  # type: ignore[union-attr]
    assert reply.get(timeout=5) == ["no actor has the id 'ghost'"] * 2
    assert one(dsn, "SELECT count(*) FROM promises WHERE recipient = 'ghost'") == 0


def test_a_call_to_a_child_that_is_given_up_raises_child_failed_with_its_error(
    rt: Runtime, dsn: str
) -> None:
    reply = rt.spawn(Prober, id="prober").ask(Broken(3))
    assert reply.get(timeout=5) == [
        "ChildFailedError",
        "prober/fragile",
        "RuntimeError('fragile broke on 3')",
    ]
    assert one(dsn, "SELECT status FROM actors WHERE id = 'prober/fragile'") == "failed"
    assert one(dsn, "SELECT status FROM actors WHERE id = 'prober'") == "running"
