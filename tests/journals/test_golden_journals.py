"""Golden journals: messages recorded by an earlier version, replayed by the code as it is now.

Each JSON file here holds one finished message, its steps and its actor's kind, as
``record.py`` wrote them (from the version before issue 15). The replay check runs the
handler again from the journal alone: a change that would make a journal kept in production
fail its replay (a fingerprint's text, a step's position, how a request to a model is built)
fails here first. A journal altered on purpose shows the check is not blind.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from promissory import Runtime, Store
from promissory.testing import check_replay
from tests.journals import subjects  # noqa: F401 - the classes and agents the journals name

HERE = Path(__file__).resolve().parent
GOLDEN = sorted(HERE.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    journal: dict[str, Any] = json.loads(path.read_text())
    return journal


def keep(dsn: str, journal: dict[str, Any]) -> None:
    """Write ``journal`` into the store as an outsider can: its actor (ended, so nothing runs
    it) and its promises, in their order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        actor = journal["actor"]
        conn.execute(
            "INSERT INTO actors (id, kind, status) VALUES (%s, %s, 'stopped')",
            (actor["id"], actor["kind"]),
        )
        for p in journal["promises"]:
            conn.execute(
                "INSERT INTO promises (id, state, param, value, tags, kind, recipient, "
                "fingerprint, attempt, settled_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "CASE WHEN %s = 'pending' THEN NULL ELSE clock_timestamp() END)",
                (
                    p["id"],
                    p["state"],
                    None if p["param"] is None else Jsonb(p["param"]),
                    None if p["value"] is None else Jsonb(p["value"]),
                    Jsonb(p["tags"]),
                    p["kind"],
                    p["recipient"],
                    p["fingerprint"],
                    p["attempt"],
                    p["state"],
                ),
            )


@pytest.fixture
def replay(dsn: str) -> Iterator[Any]:
    """``replay(journal)``: keep it in a fresh schema and run the replay check on it."""
    with Store(dsn):
        pass  # the schema
    rt = Runtime(dsn).open()

    def run(journal: dict[str, Any]) -> str | None:
        keep(dsn, journal)
        return check_replay(rt, journal["message"])

    try:
        yield run
    finally:
        rt.close()


def test_there_are_golden_journals_of_an_actor_and_of_an_agent() -> None:
    assert {p.stem for p in GOLDEN} >= {"clerk_order", "agent_run", "agent_tools"}


# agent_run.json spawned its sub-agent under promissory.agents._loop:AgentRun, the kind every
# run had before agents were kept as agent:<name>: it replays through ``Actor.former_kinds``.
GOLDEN_CASES = [pytest.param(p, id=p.stem) for p in GOLDEN]


@pytest.mark.parametrize("path", GOLDEN_CASES)
def test_a_golden_journal_replays_exactly(replay: Any, path: Path) -> None:
    assert replay(load(path)) is None


def steps(journal: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in journal["promises"] if p["id"] != journal["message"]]


def test_a_journal_whose_step_asked_for_something_else_fails_its_replay(replay: Any) -> None:
    journal = copy.deepcopy(load(HERE / "clerk_order.json"))
    step = next(p for p in steps(journal) if (p["fingerprint"] or "").startswith("step:"))
    step["fingerprint"] = step["fingerprint"].rsplit(":", 1)[0] + ":000000000000"

    problem = replay(journal)

    assert problem is not None
    assert f"replay of step {step['id']}" in problem


def test_a_journal_missing_its_last_step_says_the_handler_asked_for_more(replay: Any) -> None:
    journal = copy.deepcopy(load(HERE / "clerk_order.json"))
    last = steps(journal)[-1]
    journal["promises"].remove(last)

    problem = replay(journal)

    assert problem is not None
    assert f"asked for step {last['id']}, which its journal does not hold" in problem


def test_a_journal_whose_kept_reply_differs_from_the_replayed_one_fails(replay: Any) -> None:
    journal = copy.deepcopy(load(HERE / "clerk_order.json"))
    journal["promises"][0]["value"] = {"amount": -1}

    problem = replay(journal)

    assert problem is not None
    assert "not the kept" in problem
