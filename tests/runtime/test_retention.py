"""Retention: top-level runs finished longer ago than an age are forgotten (with their
continuations, once all finished before it), by the database's clock, in bounded batches, by
any number of nodes at once; unfinished runs and what is not a run stay."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from promissory.errors import InvalidInputError, PromiseCanceledError
from promissory.runtime import Runtime
from promissory.store import Store
from tests.actors.kit import Echo, Ping, eventually, sql
from tests.store import forget_kit as kit
from tests.store.forget_kit import (
    LEAVER,
    SOLO,
    TEAM,
    backdate,
    ended,
    everything_of,
    finished_team_run,
)

DAY = 86400.0


@pytest.fixture
def rt(dsn: str) -> Iterator[Runtime]:
    with Runtime(dsn) as runtime:
        yield runtime


def store_of(rt: Runtime) -> Store:
    assert rt.store is not None
    return rt.store


def test_runs_finished_before_the_age_are_forgotten_and_the_rest_stay(
    rt: Runtime, dsn: str
) -> None:
    finished_team_run(rt, "ret/old")
    finished_team_run(rt, "ret/new")
    rt.start(TEAM, "go", id="ret/waiting")  # under way, however old
    eventually(lambda: store_of(rt).find(kit.approval_of("ret/waiting")), what="waiting")
    assert rt.run(LEAVER, "go", id="ret/leaver", timeout=15) == "left"  # owns a pending promise
    echo = rt.spawn(Echo, id="ret/echo")  # a plain actor's messages are not runs
    echo.ask(Ping("hi"), id="ret/echo/m1").get(timeout=15)
    ended(dsn, "ret/old", "ret/new", "ret/leaver")
    backdate(dsn, "ret/old", "ret/leaver", "ret/echo/m1", "ret/old/3")
    kept = {run: everything_of(dsn, run) for run in ("ret/new", "ret/waiting", "ret/leaver")}

    forgotten = store_of(rt).forget_finished(DAY)

    assert forgotten == ["ret/old"]
    assert everything_of(dsn, "ret/old") == []
    for run, rows in kept.items():
        assert [r[:2] for r in everything_of(dsn, run)] == [r[:2] for r in rows], run
    assert sql(dsn, "SELECT state FROM promises WHERE id = 'ret/echo/m1'") == [("resolved",)]
    assert store_of(rt).forget_finished(DAY) == []  # again: nothing more


def test_a_run_goes_with_its_continuations_once_all_finished_before_the_age(
    rt: Runtime, dsn: str
) -> None:
    handle = rt.start(TEAM, "go", id="ret/resumed")
    eventually(lambda: store_of(rt).find(kit.approval_of("ret/resumed")), what="waiting")
    rt.cancel("ret/resumed")
    with pytest.raises(PromiseCanceledError):
        handle.result(timeout=15)
    resumed = rt.resume("ret/resumed")
    kit.approve(rt, resumed.id)
    assert resumed.result(timeout=15) == "done"
    ended(dsn, "ret/resumed", resumed.id)
    backdate(dsn, "ret/resumed")

    assert store_of(rt).forget_finished(DAY) == []  # its continuation finished just now

    backdate(dsn, resumed.id)
    assert store_of(rt).forget_finished(DAY) == ["ret/resumed"]
    assert everything_of(dsn, "ret/resumed") == everything_of(dsn, resumed.id) == []


def test_runs_that_cannot_be_forgotten_yet_do_not_hold_back_the_others(
    rt: Runtime, dsn: str
) -> None:
    leavers = [f"ret/leaver{i}" for i in range(3)]
    for run in leavers:
        rt.run(LEAVER, "go", id=run, timeout=15)
    solos = [f"ret/solo{i}" for i in range(3)]
    for run in solos:
        rt.run(SOLO, "go", id=run, timeout=15)
    ended(dsn, *leavers, *solos)
    backdate(dsn, *leavers, days=3)  # the oldest, and each still owning a pending promise
    backdate(dsn, *solos)

    assert sorted(store_of(rt).forget_finished(DAY, batch=2)) == solos

    assert all(everything_of(dsn, run) for run in leavers)


def test_nodes_forgetting_at_once_forget_each_run_once(rt: Runtime, dsn: str) -> None:
    runs = [f"ret/many/{i:02}" for i in range(24)]
    for run in runs:
        rt.start(SOLO, "go", id=run)
    for run in runs:
        rt.start(SOLO, "go", id=run).result(timeout=15)
    ended(dsn, *runs)
    backdate(dsn, *runs)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def node() -> None:
        try:
            with Store(dsn) as store:
                results.append(store.forget_finished(DAY, batch=5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    forgotten = [run for result in results for run in result]
    assert sorted(forgotten) == runs  # each once, by one node or another
    assert sql(dsn, "SELECT count(*) FROM promises WHERE id LIKE %s", "ret/many/%") == [(0,)]


def test_a_runtime_with_retention_forgets_old_runs_by_itself(dsn: str) -> None:
    with Runtime(dsn) as rt:
        rt.run(SOLO, "go", id="ret/self/old", timeout=15)
        rt.run(SOLO, "go", id="ret/self/new", timeout=15)
    backdate(dsn, "ret/self/old", days=31)

    with Runtime(dsn, retention=timedelta(days=30)) as rt:
        assert rt.timers.retention is not None
        retention = rt.timers.retention
        eventually(lambda: retention.forgotten == 1, what="the old run forgotten")
        assert everything_of(dsn, "ret/self/old") == []
        assert everything_of(dsn, "ret/self/new") != []
        assert retention.every == 3600.0  # a tenth of the age, at most an hour


@pytest.mark.parametrize("retention", [0, -1.0, timedelta(0), "30d"])
def test_retention_must_be_a_positive_duration(dsn: str, retention: object) -> None:
    with pytest.raises(InvalidInputError, match="retention must be a positive"):
        Runtime(dsn, retention=retention)  # type: ignore[arg-type]
