"""Messages a handler sends go with its next write (the outbox).

``ctx.send`` costs no commit of its own: the message is written in the transaction of the
handler's next kept step, wait or reply, and handed to its actor then. A handler that waits
has what it sent written first (what it waits on may depend on it); a handler that crashes has
it written before the crash is handled, as if it had not been deferred. A target that is gone
by then does not fail the handler: the message is dropped with a warning and the step is kept
as rejected, which a replay reads the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import msgspec
import pytest

from promissory import Context, DurableActor, Runtime, handler
from tests.kit import eventually, sql

RECEIVED: list[str] = []
LOCK = threading.Lock()


class Note(msgspec.Struct, frozen=True):
    text: str


class Inbox(DurableActor[None]):
    @handler
    def note(self, ctx: Context, msg: Note) -> str:
        with LOCK:
            RECEIVED.append(msg.text)
        if msg.text.startswith("resolve "):
            ctx.step(_resolve, msg.text.removeprefix("resolve "))
        return msg.text


def _resolve(promise_id: str) -> None:
    from promissory import Store

    with Store(STORE_DSN[0]) as store:
        store.resolve(promise_id, True)


STORE_DSN: list[str] = [""]


class Send(msgspec.Struct, frozen=True):
    target: str
    text: str
    then: str = "reply"  # reply | step | wait | crash


def peek(message_id: str) -> int:
    """How many rows the database holds for ``message_id`` now."""
    return len(sql(STORE_DSN[0], "SELECT 1 FROM promises WHERE id = %s", message_id))


class Sender(DurableActor[None]):
    @handler
    def send(self, ctx: Context, msg: Send) -> str:
        ctx.send(msg.target, Note(msg.text))
        if msg.then == "step":
            return f"seen {ctx.step(peek, ctx.message_id + '/1')} while the step ran"
        elif msg.then == "wait":
            ctx.promise(id=f"wait/{ctx.message_id}").result()
        elif msg.then == "crash":
            raise RuntimeError("crashed after sending")
        return "sent"


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    RECEIVED.clear()
    STORE_DSN[0] = dsn
    with Runtime(dsn) as runtime:
        yield runtime


def writes(rt: Runtime) -> int:
    assert rt.store is not None
    return rt.store.writer_stats[0]


def test_a_message_sent_from_a_handler_costs_no_commit_of_its_own(rt: Runtime) -> None:
    inbox = rt.spawn(Inbox, id="inbox")
    sender = rt.spawn(Sender, id="sender")
    inbox.ask(Note("warm")).get(timeout=10)
    sender.ask(Send("inbox", "warm")).get(timeout=10)
    eventually(lambda: RECEIVED.count("warm") == 2, what="the warm-up notes")
    before = writes(rt)

    n = 10
    for i in range(n):
        assert sender.ask(Send("inbox", f"n{i}")).get(timeout=10) == "sent"
    eventually(lambda: len(RECEIVED) == n + 2, what="every note handled")

    # Each: the ask (1), the sender's reply with its note in the same transaction (1), the
    # inbox's settle of the note (1); the note alone would have been a fourth (the slack:
    # the node's own bookkeeping meanwhile).
    assert writes(rt) - before <= 3 * n + 2


def test_a_message_sent_before_a_step_goes_with_the_step(rt: Runtime, dsn: str) -> None:
    rt.spawn(Inbox, id="inbox")
    reply = rt.spawn(Sender, id="sender").ask(Send("inbox", "with a step", then="step"))
    # Not written while the step ran; written when the step was kept, and delivered.
    assert reply.get(timeout=10) == "seen 0 while the step ran"
    eventually(lambda: "with a step" in RECEIVED, what="the note handled")
    assert len(sql(dsn, "SELECT 1 FROM promises WHERE id = %s", f"{reply.id}/1")) == 1


def test_a_handler_that_waits_has_what_it_sent_written_first(rt: Runtime) -> None:
    # The note tells the inbox to resolve the very promise the sender waits on: had the
    # note waited for the sender's next write, both would wait forever.
    rt.spawn(Inbox, id="inbox")
    sender = rt.spawn(Sender, id="sender")
    message_id = "sender/m-wait"
    reply = sender.ask(Send("inbox", f"resolve wait/{message_id}", then="wait"), id=message_id)
    assert reply.get(timeout=15) == "sent"


def test_a_handler_that_crashes_has_what_it_sent_delivered(rt: Runtime) -> None:
    rt.spawn(Inbox, id="inbox")
    sender = rt.spawn(Sender, id="sender")
    sender.tell(Send("inbox", "before the crash", then="crash"))
    eventually(lambda: "before the crash" in RECEIVED, what="the note handled")


def test_a_send_to_an_actor_that_is_gone_is_dropped_with_a_warning_not_a_failure(
    rt: Runtime, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    sender = rt.spawn(Sender, id="sender")
    reply = sender.ask(Send("nobody/home", "hello?"))
    assert reply.get(timeout=10) == "sent"
    # Said after the reply's commit, maybe a moment after the asker has the reply.
    eventually(
        lambda: any(
            "dropped" in r.getMessage() and "nobody/home" in r.getMessage() for r in caplog.records
        ),
        what="the warning",
    )
    # Nothing was written for the missing actor; the step says why, for a replay and a person.
    assert sql(dsn, "SELECT count(*) FROM promises WHERE recipient = 'nobody/home'") == [(0,)]
    eventually(
        lambda: (
            sql(dsn, "SELECT state FROM promises WHERE id = %s", f"{reply.id}/1") == [("rejected",)]
        ),
        what="the dropped send kept as rejected",
    )
