"""Claims of an actor for a node: refused while its supervisor's decided restart waits, and
looked up by index whatever the planner knows of the tables (schema-level, by SQL)."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest

from promissory.store import Store
from promissory.store._actors import claim_op
from promissory.store._handling import send_op
from promissory.store._take_up import take_up_op


def _family(db: psycopg.Connection[Any], children: int = 3, node: str = "n1") -> None:
    db.execute(
        "INSERT INTO actors (id, kind, node, supervisor) VALUES ('sup', 'Sup', %s, true)", (node,)
    )
    for i in range(children):
        db.execute(
            "INSERT INTO actors (id, parent, kind, node) VALUES (%s, 'sup', 'W', %s)",
            (f"sup/c{i}", node),
        )


def _plan_restart(db: psycopg.Connection[Any], exit_id: str, child: str) -> int:
    """The supervisor's state while it handles a ``ChildExit``: the message pending, its plan
    (the message's first step) kept, restarting ``child``. Returns the message's seq."""
    row = db.execute(
        "INSERT INTO promises (id, kind, recipient, tags) "
        "VALUES (%s, 'message', 'sup', '{\"promissory:type\": \"ChildExit\"}') RETURNING seq",
        (exit_id,),
    ).fetchone()
    assert row is not None
    db.execute(
        "INSERT INTO promises (id, kind, state, settled_at, value) VALUES "
        "(%s, 'step', 'resolved', now(), jsonb_build_object('actions', jsonb_build_array("
        "jsonb_build_object('type', 'stop', 'child', 'sup/c2'), "
        "jsonb_build_object('type', 'restart', 'child', %s::text))))",
        (exit_id + "/1", child),
    )
    return int(row[0])


@pytest.mark.parametrize("how", ["claim", "send", "take-up"])
def test_a_child_whose_restart_is_decided_and_not_applied_is_not_claimed(
    store: Store, dsn: str, how: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        _family(db)
        # Other pending messages to the supervisor (not exits) and an exit whose plan is not
        # kept yet do not count; nor does a decided restart of another child.
        for i in range(5):
            db.execute(
                "INSERT INTO promises (id, kind, recipient, tags) "
                "VALUES (%s, 'message', 'sup', '{\"promissory:type\": \"Work\"}')",
                (f"sup/m-{i}",),
            )
        db.execute(
            "INSERT INTO promises (id, kind, recipient, tags) "
            "VALUES ('sup/exit-0', 'message', 'sup', '{\"promissory:type\": \"ChildExit\"}')"
        )
        seq = _plan_restart(db, "sup/exit-1", "sup/c1")

        sends = itertools.count()

        def claim(child: str) -> bool:
            if how == "claim":
                return store.execute(claim_op(child, "n1")) is not None
            if how == "take-up":
                return child in store.execute(take_up_op([child], "n1"))
            sent = store.execute(
                send_op(
                    f"{child}/m-{next(sends)}",
                    child,
                    param="1",
                    tags="{}",
                    claim="n1",
                )
            )
            return sent.claimed is not None

        assert claim("sup/c0")  # not the one the plan restarts
        assert not claim("sup/c1")
        # The revive applied (its decision recorded on the child): the claim holds again.
        db.execute(
            "UPDATE actors SET decision = (%s::bigint << 20) | 1 WHERE id = 'sup/c1'", (seq,)
        )
        assert claim("sup/c1")


def test_a_claiming_send_finds_its_actor_by_index_among_many_on_the_node(
    store: Store, dsn: str
) -> None:
    # With no statistics on the tables (a new database; autovacuum has not analyzed them), a
    # send that claims its recipient chose to read every actor of the node and every pending
    # message of the database; it now reads the recipient's row and its supervisor's exits.
    with psycopg.connect(dsn, autocommit=True) as db:
        _family(db, children=400)
        for i in range(400):
            db.execute(
                "INSERT INTO promises (id, kind, recipient) VALUES (%s, 'message', %s)",
                (f"sup/c{i}/m-old", f"sup/c{i}"),
            )
        op = send_op("sup/c7/m-new", "sup/c7", param="1", tags="{}", claim="n1", handed="n1")
        sql, params = op.statements[0]
        with db.transaction(force_rollback=True):
            plan = db.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + sql.encode(), params).fetchone()
    assert plan is not None
    scanned = _rows_read(plan[0][0]["Plan"])
    assert scanned < 50, f"a claiming send read {scanned} rows"


def _rows_read(node: dict[str, Any]) -> int:
    """Rows the plan's scans returned or threw away, over all their loops."""
    own = 0
    if "Scan" in node["Node Type"]:
        loops = node.get("Actual Loops", 1)
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
    return own + sum(_rows_read(child) for child in node.get("Plans", []))
