"""``Store.forget``: a finished run goes, with everything of it, in one transaction; a run not
finished is refused (naming what is pending or running) unless forced, and a forced forget
cancels first and waits for the run's live actors to end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from promissory.errors import PromiseCanceledError, RunNotFinishedError
from promissory.runtime import Runtime
from promissory.store import Forgotten, Store
from tests.actors.kit import eventually, sql

from . import forget_kit as kit
from .forget_kit import LEAVER, SOLO, STUCK, TEAM, approval_of, everything_of, finished_team_run


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    with Runtime(dsn) as runtime:
        yield runtime


def store_of(rt: Runtime) -> Store:
    assert rt.store is not None
    return rt.store


def ids_of(dsn: str, run_id: str) -> list[tuple[str, str]]:
    return [(kind, id) for kind, id, _ in everything_of(dsn, run_id)]


def test_forgetting_a_finished_run_deletes_all_of_it_and_nothing_else(
    rt: Runtime, dsn: str
) -> None:
    finished_team_run(rt, "forget/r1")
    finished_team_run(rt, "forget/r10")  # its id starts with the other's: it stays
    before = everything_of(dsn, "forget/r1")
    kinds = {(kind, id.removeprefix("forget/r1")) for kind, id, _ in before}
    # The run, its steps, its sub-agent's run and actor, its actor, and its approval elsewhere.
    assert ("promise", "") in kinds and ("actor", "") in kinds
    assert ("actor", "/t1-0-forget_researcher") in kinds
    assert ("promise", "approvals/forget/forget/r1") in kinds
    others = everything_of(dsn, "forget/r10")

    forgotten = store_of(rt).forget("forget/r1")

    promises = sum(1 for kind, _, _ in before if kind == "promise")
    assert forgotten == Forgotten(
        id="forget/r1", runs=["forget/r1"], promises=promises, actors=2, canceled=0
    )
    assert everything_of(dsn, "forget/r1") == []
    assert sql(dsn, "SELECT id FROM promises WHERE id = %s", approval_of("forget/r1")) == []
    assert everything_of(dsn, "forget/r10") == others


def test_a_forgotten_run_id_runs_anew(rt: Runtime) -> None:
    first = rt.start(SOLO, "q", id="forget/anew")
    first.details(timeout=15)
    store_of(rt).forget("forget/anew")

    again = rt.start(SOLO, "q", id="forget/anew")

    assert not again.reused
    assert again.details(timeout=15).reused is False
    assert again.details().output == "ok"


def test_forgetting_an_id_that_is_not_there_deletes_nothing(rt: Runtime) -> None:
    rt.run(SOLO, "q", id="forget/twice", timeout=15)
    assert store_of(rt).forget("forget/twice").runs == ["forget/twice"]

    assert store_of(rt).forget("forget/twice") == Forgotten(id="forget/twice")
    assert store_of(rt).forget("forget/never") == Forgotten(id="forget/never")


def test_a_run_under_way_is_refused_naming_what_is_pending_and_nothing_is_deleted(
    rt: Runtime, dsn: str
) -> None:
    rt.start(TEAM, "go", id="forget/busy")
    eventually(lambda: store_of(rt).find(approval_of("forget/busy")), what="waiting")
    before = ids_of(dsn, "forget/busy")

    with pytest.raises(RunNotFinishedError) as raised:
        store_of(rt).forget("forget/busy")

    error = raised.value
    assert error.run_id == "forget/busy"
    assert "forget/busy (message, pending)" in error.unfinished
    assert "approvals/forget/forget/busy (promise, owned, pending)" in error.unfinished
    assert "forget/busy (actor, running)" in error.unfinished
    text = str(error)
    assert text.startswith("forget/busy is not finished, so it is not forgotten: ")
    assert "approvals/forget/forget/busy (promise, owned, pending)" in text
    assert "forget it with force" in text
    assert set(ids_of(dsn, "forget/busy")) >= set(before)  # nothing deleted
    kit.approve(rt, "forget/busy")  # it goes on, untouched
    assert rt.start(TEAM, "go", id="forget/busy").result(timeout=15) == "done"


def test_a_finished_run_that_owns_a_pending_promise_is_refused_until_forced(
    rt: Runtime, dsn: str
) -> None:
    assert rt.run(LEAVER, "go", id="forget/leaver", timeout=15) == "left"

    with pytest.raises(RunNotFinishedError) as raised:
        store_of(rt).forget("forget/leaver")
    assert raised.value.unfinished == ["approvals/forget/forget/leaver (promise, owned, pending)"]

    forgotten = store_of(rt).forget("forget/leaver", force=True)

    assert forgotten.canceled == 1 and forgotten.runs == ["forget/leaver"]
    assert everything_of(dsn, "forget/leaver") == []


def test_forcing_cancels_a_waiting_run_lets_it_clean_up_then_forgets_it(
    rt: Runtime, dsn: str
) -> None:
    handle = rt.start(TEAM, "go", id="forget/forced")
    eventually(lambda: store_of(rt).find(approval_of("forget/forced")), what="waiting")
    waiter: list[BaseException] = []
    watching = threading.Thread(target=lambda: _wait(handle, waiter))
    watching.start()

    forgotten = store_of(rt).forget("forget/forced", force=True)

    # Its handler saw the cancel and kept its cleanup step before the rows went.
    assert kit.TIDIED.count("forget/forced") == 1
    assert forgotten.runs == ["forget/forced"] and forgotten.canceled >= 2
    assert everything_of(dsn, "forget/forced") == []
    watching.join(10)
    assert len(waiter) == 1  # whoever waited on the run was told it ended


def _wait(handle: object, errors: list[BaseException]) -> None:
    try:
        handle.result(timeout=10)  # type: ignore[attr-defined]
    except BaseException as exc:
        errors.append(exc)


def test_forcing_a_run_that_no_live_node_hosts_forgets_it_without_waiting(dsn: str) -> None:
    with Runtime(dsn) as rt:
        rt.start(TEAM, "go", id="forget/unhosted")
        eventually(lambda: store_of(rt).find(approval_of("forget/unhosted")), what="waiting")
    # A node killed with the run on it: its row is left, its lease (advisory lock) is gone.
    sql(
        dsn,
        "INSERT INTO nodes (id, lock_key) VALUES ('dead-node', 4242) RETURNING id",
    )
    sql(dsn, "UPDATE actors SET node = 'dead-node' WHERE id = 'forget/unhosted' RETURNING id")

    with Store(dsn) as store:
        began = time.monotonic()
        forgotten = store.forget("forget/unhosted", force=True, timeout=20)

    assert time.monotonic() - began < 5
    assert forgotten.runs == ["forget/unhosted"]
    assert everything_of(dsn, "forget/unhosted") == []


def test_a_forced_forget_whose_actors_do_not_end_in_time_forgets_nothing(
    rt: Runtime, dsn: str
) -> None:
    kit.GATES["gate"] = gate = threading.Event()
    kit.STUCK_IN.clear()
    handle = rt.start(STUCK, "go", id="forget/stuck")
    assert kit.STUCK_IN.wait(15), "the stuck tool never ran"

    with pytest.raises(RunNotFinishedError) as raised:
        store_of(rt).forget("forget/stuck", force=True, timeout=0.5)

    assert "after 0.5 s its actors still run: forget/stuck (actor, running on node" in str(
        raised.value
    )
    assert sql(dsn, "SELECT state FROM promises WHERE id = 'forget/stuck'") == [
        ("rejected_canceled",)
    ]
    gate.set()  # the tool returns; the handler sees the cancel and ends
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=15)
    assert store_of(rt).forget("forget/stuck", force=True, timeout=15).runs == ["forget/stuck"]
    assert everything_of(dsn, "forget/stuck") == []


def test_a_run_is_forgotten_with_its_continuations(rt: Runtime, dsn: str) -> None:
    handle = rt.start(TEAM, "go", id="forget/resumed")
    eventually(lambda: store_of(rt).find(approval_of("forget/resumed")), what="waiting")
    rt.cancel("forget/resumed")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=15)
    resumed = rt.resume("forget/resumed")
    kit.approve(rt, resumed.id)
    assert resumed.result(timeout=15) == "done"

    forgotten = store_of(rt).forget("forget/resumed")

    assert forgotten.runs == ["forget/resumed", "forget/resumed~resume1"]
    assert everything_of(dsn, "forget/resumed") == []
    assert everything_of(dsn, "forget/resumed~resume1") == []
    # Its id runs anew, from the start, not joined to the old continuation.
    assert not rt.start(TEAM, "go", id="forget/resumed").reused


def test_a_finished_run_whose_actor_end_was_never_kept_is_forgotten(dsn: str) -> None:
    """The process ended right after the run's reply, before its actor's end was kept: the
    actor is idle and no live node holds it, so it runs nowhere, and the run is finished."""
    with Runtime(dsn) as rt:
        rt.run(SOLO, "q", id="forget/cut-off", timeout=15)
    sql(
        dsn,
        "UPDATE actors SET status = 'running', node = NULL WHERE id = 'forget/cut-off' "
        "RETURNING id",
    )

    with Store(dsn) as store:
        began = time.monotonic()
        assert store.forget("forget/cut-off").runs == ["forget/cut-off"]

    assert time.monotonic() - began < 2  # nothing was waited for
    assert everything_of(dsn, "forget/cut-off") == []
