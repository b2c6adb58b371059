"""The runtime as its users see it: passivation, other processes, replies by id, asyncio."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from itertools import pairwise

import msgspec

from promissory.actors import Context, DurableActor, Reply, handler
from promissory.runtime import Runtime
from promissory.store import Store
from tests.actors.kit import (
    Appender,
    Echo,
    Item,
    Items,
    Nap,
    Ping,
    Pong,
    Sleeper,
    eventually,
    one,
    python,
)


def test_an_idle_activation_is_passivated_and_a_new_message_reactivates_it(dsn: str) -> None:
    # Long enough that the checks right after each reply still find the activation live on
    # a loaded machine.
    with Runtime(dsn, idle_timeout=1.0) as rt:
        ref = rt.spawn(Appender, id="appender")
        assert ref.ask(Item(1)).get(timeout=5) == [1]
        idle_since = time.monotonic()
        assert rt.host.live_activations() == 1
        epoch = one(dsn, "SELECT epoch FROM actors WHERE id = 'appender'")
        eventually(lambda: rt.host.live_activations() == 0, what="the activation passivated")
        # The idle clock starts before the reply reaches the test: a lower bound with slack.
        assert time.monotonic() - idle_since >= 0.5
        assert ref.ask(Item(2)).get(timeout=5) == [1, 2], "the state came back from its row"
        assert rt.host.live_activations() == 1
        assert one(dsn, "SELECT epoch FROM actors WHERE id = 'appender'") == epoch + 1


def test_each_idle_activation_is_passivated_on_its_own_clock_and_a_busy_one_never(
    dsn: str,
) -> None:
    # One sweep passivates them all (no timer per message): each still gets its own full
    # idle time, counted from its own last message.
    with Runtime(dsn, idle_timeout=1.0) as rt:
        busy = rt.spawn(Appender, id="busy")
        early = rt.spawn(Appender, id="early")
        late = rt.spawn(Appender, id="late")
        early.ask(Item(0)).get(timeout=5)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 0.5:
            n += 1
            busy.ask(Item(n)).get(timeout=5)
            time.sleep(0.1)
        late.ask(Item(0)).get(timeout=5)
        late_idle = time.monotonic()
        assert rt.host.live_activations() == 3
        eventually(lambda: rt.host.live_activations() <= 2, what="the early one passivated")
        assert "early" not in rt.host.live_ids() and "late" in rt.host.live_ids()
        while time.monotonic() - late_idle < 2.5:  # the busy one keeps its thread throughout
            n += 1
            busy.ask(Item(n)).get(timeout=5)
            assert "busy" in rt.host.live_ids()
            time.sleep(0.1)
        assert rt.host.live_ids() == ["busy"], "the late one passivated in its turn"
        eventually(lambda: rt.host.live_activations() == 0, what="the busy one, once idle")


def test_a_process_with_only_a_runtime_can_ask_an_actor_hosted_here(dsn: str) -> None:
    with Runtime(dsn) as rt:
        ref = rt.spawn(Echo, id="echo")
        here = ref.ask(Ping("local")).get(timeout=5, type=Pong)
        assert here == Pong("local", os.getpid(), rt.node_id)
        out = python(
            "-m", "tests.runtime.proc", "ask", "echo", "remote", env={"PROMISSORY_DSN": dsn}
        )
        result = msgspec.json.decode(out.strip().splitlines()[-1])
        assert result["pid"] != os.getpid() and result["node"] != rt.node_id
        # Handled here, by this test's runtime, and answered to the other process.
        assert result["pong"] == {"text": "remote", "pid": os.getpid(), "node": rt.node_id}
        assert rt.store is not None
        assert Reply(result["reply"], rt.store, Pong).get(timeout=5) == Pong(
            "remote", os.getpid(), rt.node_id
        )


def test_a_reply_rebuilt_from_its_id_gives_the_same_answer_anywhere(dsn: str) -> None:
    with Runtime(dsn, suspend_after=0.02) as rt:
        ref = rt.spawn(Echo, id="echo")
        reply = ref.ask(Ping("hello"))
        pong = reply.get(timeout=5, type=Pong)
        with Store(dsn) as store:
            again = Reply(reply.id, store, Pong)
            assert again.done()
            assert again.get(timeout=5) == pong
            assert again.promise().state == "resolved"
        out = python("-m", "tests.runtime.proc", "reply", reply.id, env={"PROMISSORY_DSN": dsn})
        assert msgspec.json.decode(out.strip().splitlines()[-1], type=Pong) == pong
        # A reply still pending can be rebuilt too, and waited on.
        pending = rt.spawn(Sleeper, id="sleeper").ask(Nap(0.2))
        assert Reply(pending.id, rt.store).get(timeout=5) == f"woke {pending.id}"


def test_awaiting_replies_in_asyncio_does_not_block_the_event_loop(dsn: str) -> None:
    with Runtime(dsn, suspend_after=0.02) as rt:
        sleepers = [rt.spawn(Sleeper, id=f"sleepers/{k}") for k in range(3)]

        async def main() -> tuple[list[str], list[str], list[float], float]:
            ticks: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            started = time.monotonic()
            replies = [s.ask(Nap(2.0)) for s in sleepers]
            values = await asyncio.gather(*replies)
            elapsed = time.monotonic() - started
            stop.set()
            await task
            return [r.id for r in replies], list(values), ticks, elapsed

        ids, values, ticks, elapsed = asyncio.run(main())
        assert values == [f"woke {id}" for id in ids]
        assert elapsed >= 2.0
        # The ticker runs from the first await to past the replies: a wait that blocked the
        # loop would leave a gap as long as the nap. The largest gap, not a tick count, so a
        # loaded machine's slower ticks do not matter.
        assert ticks[-1] - ticks[0] >= 1.5
        gap = max(b - a for a, b in pairwise(ticks))
        assert gap < 1.0, f"the loop stood still for {gap:.2f} s"


STARTED = threading.Event()


def long_step(n: int) -> int:
    STARTED.set()
    time.sleep(0.2)
    return n


class Busy(DurableActor[Items]):
    @handler
    def item(self, ctx: Context, msg: Item) -> list[int]:
        ctx.step(long_step, msg.n)
        self.state = Items([*self.state.items, msg.n])
        return self.state.items


def test_closing_the_runtime_lets_the_handler_in_flight_finish_its_message(dsn: str) -> None:
    STARTED.clear()
    with Runtime(dsn) as rt:
        reply = rt.spawn(Busy, id="busy").ask(Item(7))
        assert STARTED.wait(5)
    # Closed while the step ran: the message was settled before close returned.
    assert one(dsn, "SELECT state, value FROM promises WHERE id = %s", reply.id) == (
        "resolved",
        [7],
    )
    assert one(dsn, "SELECT state, node FROM actors WHERE id = 'busy'") == ({"items": [7]}, None)
