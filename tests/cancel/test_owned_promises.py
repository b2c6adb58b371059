"""Promises a run creates or waits on belong to it whatever their id: a cancel or a deadline of
the run reaches them. A promise another run owns is that run's: it is canceled only with it."""

from __future__ import annotations

from typing import Any

import pytest

from promissory import Context
from promissory.agents import Agent, ScriptedModel, call, reply
from promissory.errors import PromiseCanceledError, PromiseTimedOutError
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.kit import eventually


def ask_elsewhere(ctx: Context, key: str) -> str:
    """Wait for a person's answer on a promise whose id is not under the run.

    Args:
        key: which question.
    """
    return "yes" if ctx.promise(id=f"approvals/{key}").result(bool) else "no"


def asker(name: str) -> Agent:
    return Agent(
        name,
        "Ask, then answer.",
        ScriptedModel([reply("", call("ask_elsewhere", "q1", key="shared")), "asked"]),
        tools=[ask_elsewhere],
    )


ASKER = asker("owned-asker")
OTHER = asker("owned-other")


def state(dsn: str, id: str) -> str:
    return str(kit.sql(dsn, "SELECT state FROM promises WHERE id = %s", id)[0][0])


def waiting(dsn: str, run: str) -> Any:
    return kit.sql(dsn, "SELECT 1 FROM promises WHERE id = %s AND awaiting IS NOT NULL", run)


@pytest.mark.parametrize("how", ["rt.cancel", "store.cancel", "actor", "deadline"])
def test_canceling_a_run_cancels_the_promise_it_created_outside_its_id(
    rt: Runtime, dsn: str, how: str
) -> None:
    run = f"owned/{how.replace('.', '-')}"
    handle = rt.start(ASKER, "go", id=run, deadline=5 if how == "deadline" else None)
    eventually(lambda: waiting(dsn, run), what="waiting on the approval")
    assert kit.sql(dsn, "SELECT owner FROM promises WHERE id = 'approvals/shared'") == [(run,)]
    assert rt.store is not None
    if how == "rt.cancel":
        rt.cancel(run)
    elif how == "store.cancel":
        rt.store.cancel(run)
    elif how == "actor":
        rt.store.cancel_actor(run)  # the run's actor: its mailbox is canceled
    with pytest.raises(PromiseTimedOutError if how == "deadline" else PromiseCanceledError):
        handle.result(timeout=15)
    # A deadline reads as passed at once; it is written (and cascades) by the timer service.
    eventually(lambda: state(dsn, "approvals/shared") == "rejected_canceled", timeout=10)
    # Approving it now changes nothing: settled promises never change.
    assert not rt.store.resolve("approvals/shared", True).applied


def test_a_promise_another_run_owns_is_canceled_only_with_its_owner(rt: Runtime, dsn: str) -> None:
    first = rt.start(ASKER, "go", id="owned/first")
    eventually(lambda: waiting(dsn, "owned/first"))
    second = rt.start(OTHER, "go", id="owned/second")
    eventually(lambda: waiting(dsn, "owned/second"))
    # The second run waits on the first one's approval: canceling it leaves the approval.
    rt.cancel("owned/second")
    with pytest.raises(PromiseCanceledError):
        second.result(timeout=15)
    assert state(dsn, "approvals/shared") == "pending"
    assert rt.store is not None
    rt.store.resolve("approvals/shared", True)
    assert first.result(timeout=15) == "asked"
