"""A restart's reads: the revive that makes a child's next incarnation reads its mailbox and
its head message's journal in the same transaction, so the restarted activation starts with
no read of its own; a message delivered while the child was held, which may have come after
that read, makes it read its mailbox itself (nothing is left waiting)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from promissory.actors import ChildDef, ChildSpec, Strategy, Supervisor, child
from promissory.runtime import Runtime
from tests.kit import count_calls
from tests.supervision.actors import Crash, Ping, Pong, Worker, start

MAILBOX_READS = ("mailbox_and_head", "mailbox", "journal")


class Pair(Supervisor):
    strategy = Strategy.ONE_FOR_ONE
    intensity, period = 100, 3600.0

    def children(self) -> Sequence[ChildDef]:
        return [child(Worker, id="c0"), child(Worker, id="c1")]


def _count(rt: Runtime, monkeypatch: pytest.MonkeyPatch, actor: str) -> collections.Counter[str]:
    """Calls of the store's reads of ``actor``'s mailbox and of its messages' journals (not
    another actor's: the supervisor, woken by the exit after an idle spell, reads its own)."""
    return count_calls(
        monkeypatch,
        rt.store,
        MAILBOX_READS,
        when=lambda id, *_, **__: id == actor or id.startswith(actor + "/"),
    )


def test_a_child_restarted_by_its_supervisor_retries_its_message_with_no_read(
    rt: Runtime, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start(rt, Pair)
    rt.ref("sup/c0").ask(Ping()).get(10, type=Pong)  # c0 live, its mailbox read
    calls = _count(rt, monkeypatch, "sup/c0")

    # The message crashes c0 after a step: the retry runs on the next incarnation, from the
    # mailbox and the step the revive read.
    assert rt.ref("sup/c0").ask(Crash(times=1)).get(20) == "survived"

    assert calls == {}
    assert rt.ref("sup/c0").ask(Ping()).get(10, type=Pong).epoch >= 2


def test_an_actor_restarted_by_its_own_spec_retries_its_message_with_no_read(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A top-level actor: the runtime's root policy revives it (``_exits``), with the same read.
    ref = rt.spawn(Worker, id="solo", spec=ChildSpec(restart="permanent"))
    ref.ask(Ping()).get(10, type=Pong)
    calls = _count(rt, monkeypatch, "solo")

    assert ref.ask(Crash(times=1)).get(20) == "survived"

    assert calls == {}


def test_a_message_delivered_between_the_revives_read_and_the_restart_is_handled(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message committed after the revive's transaction read the mailbox, and handed to the
    # host while the child is still held (before the host hears of the revive): the restarted
    # activation reads its mailbox itself and handles it.
    start(rt, Pair)
    rt.ref("sup/c0").ask(Ping()).get(10, type=Pong)
    real = rt.host.restarted
    late: list[Any] = []

    def restarted(revived: Any) -> None:
        if not late:
            sender = threading.Thread(target=lambda: late.append(rt.ref("sup/c0").ask(Ping())))
            sender.start()
            sender.join(10)  # committed, and handed to the host (which holds it back)
        real(revived)

    monkeypatch.setattr(rt.host, "restarted", restarted)
    calls = _count(rt, monkeypatch, "sup/c0")

    assert rt.ref("sup/c0").ask(Crash(times=1)).get(20) == "survived"

    assert late, "the late message was not sent"
    assert late[0].get(10, type=Pong).id == "sup/c0"
    assert calls["mailbox_and_head"] >= 1  # it read what the revive could not have seen
