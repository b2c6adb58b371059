"""Checks shared by the cancellation tests: what a canceled run must leave in the store."""

from __future__ import annotations

from collections import Counter
from typing import Any

from promissory.agents import RunHandle
from promissory.runtime import Runtime
from tests.cancel import kit
from tests.cancel.kit import Row, eventually, rows, sql

CANCELED_NOTE = "canceled: the run was canceled (or its deadline passed) before this call ended"


def message_of(all_rows: list[Row], agent_tool: str) -> str:
    """The id of the message (the run) of the child actor named ``…-{agent_tool}``."""
    [found] = [
        r.id
        for r in all_rows
        if r.kind == "message" and (r.recipient or "").endswith(f"-{agent_tool}")
    ]
    return found


def steps_of(all_rows: list[Row], message: str) -> list[Row]:
    """The steps of one message (its direct children), in order."""
    return [
        r
        for r in all_rows
        if r.id.startswith(message + "/") and "/" not in r.id[len(message) + 1 :]
    ]


def canceled_calls(all_rows: list[Row], message: str) -> list[Any] | None:
    """The value of the ``canceled_calls`` step of ``message``, if it has one (at most one)."""
    found = [r for r in steps_of(all_rows, message) if r.label == "canceled_calls"]
    assert len(found) <= 1, found
    if not found:
        return None
    assert found[0].state == "resolved"
    return list(found[0].value)


def check_canceled(
    dsn: str,
    run: str,
    *,
    allowed_after: frozenset[str] = frozenset({"cleanup", "canceled_calls"}),
    marks: list[kit.Mark] | None = None,
    root_state: str = "rejected_canceled",
    actors: bool = True,
) -> list[Row]:
    """Wait for the cancel of ``run`` to finish, check what every cancel must leave, and return
    the rows under the run.

    ``actors``: the run is an actor's run (an agent run): its actor and those under it all
    ended, as a shutdown, and none was restarted.

    It waits until every canceled message had its cleanup replay (its mark is cleared): a
    tree that ends lets its actors clean up first.
    """
    kit.wait_quiet(dsn, run)
    at = kit.settled_at(dsn, run)
    all_rows = rows(dsn, run)
    assert all_rows[0].id == run and all_rows[0].state == root_state
    # Every message under it was canceled with it (none finished after the cancel).
    for r in all_rows:
        if r.kind == "message":
            assert r.state in (root_state, "rejected_canceled"), r
    # No promise was made after the cancel was kept, but cleanup steps.
    late = [(r.id, r.kind, r.label) for r in all_rows if r.created > at]
    assert all(kind == "step" and label in allowed_after for _, kind, label in late), late
    # No model call or tool started after it.
    seen = kit.marks() if marks is None else marks
    assert [r.id for r in all_rows if r.marked] == []
    assert kit.started_after(seen, at, run) == []
    # No cleanup ran twice.
    cleanups = Counter(m.key for m in seen if m.name == "cleanup")
    assert set(cleanups.values()) <= {1}, cleanups
    if not actors:
        return all_rows
    # Every actor of the tree ended as a shutdown, and none was restarted.
    found = sql(
        dsn,
        f"SELECT id, status, restarts, reason->>'exit' FROM actors WHERE {kit.UNDER}",
        *kit.under(run),
    )
    assert len(found) >= 1
    assert {(status, restarts, exit) for _, status, restarts, exit in found} == {
        ("stopped", 0, "shutdown")
    }, found
    return all_rows


def check_answers(all_rows: list[Row], run: str) -> None:
    """Lead and sub-agent: each call the model made is answered by the kept cancellation
    (``canceled_calls``), so the transcript has no call left open."""
    sub = message_of(all_rows, "sub")
    for message, call_id, name in ((run, "c-lead", "sub"), (sub, "c-sub", "leaf")):
        assert canceled_calls(all_rows, message) == canceled_answers([(call_id, name)]), message


def start_tree(
    rt: Runtime, dsn: str, kind: str, run: str, started: RunHandle | None = None
) -> RunHandle:
    """Start the ``kind`` tree (unless ``started``) and wait until its leaf is waiting (on a
    timer or a promise)."""
    handle = started or rt.start(kit.TREES[kind], "go", id=run)
    waiting = "timer" if kind == "timer" else "promise"
    eventually(
        lambda: sql(
            dsn,
            f"SELECT 1 FROM promises WHERE {kit.UNDER} AND kind = %s AND state = 'pending'",
            *kit.under(run),
            waiting,
        ),
        what=f"{run} waits on a {waiting}",
    )
    leaf = f"{run}/3/3"
    eventually(
        lambda: sql(dsn, "SELECT 1 FROM promises WHERE id = %s AND awaiting IS NOT NULL", leaf),
        what=f"{leaf} suspended",
    )
    return handle


def canceled_answers(calls: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``canceled_calls``' value when every one of ``calls`` (id, tool name) was cut off."""
    return [
        {
            "type": "tool_result",
            "call_id": call_id,
            "name": name,
            "content": CANCELED_NOTE,
            "is_error": True,
        }
        for call_id, name in calls
    ]
