"""Write the golden journals: run the subjects once and keep each finished message's journal.

    python -m tests.journals.record DSN

The DSN's schema should be empty (a fresh one); the files go next to this module. Run it only
to add a journal: the point of the files is that they were kept by an earlier version.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg

from promissory import Runtime
from tests.journals import subjects
from tests.kit import eventually

HERE = Path(__file__).resolve().parent

COLUMNS = "id, state, param, value, tags, kind, recipient, fingerprint, attempt"


def journal_of(dsn: str, message_id: str) -> dict[str, Any]:
    """A finished message, its steps (its direct children) and its actor, as JSON values."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM promises WHERE id = %s OR (id LIKE %s AND id NOT LIKE %s) "
            "ORDER BY seq",
            (message_id, message_id + "/%", message_id + "/%/%"),
        ).fetchall()
        recipient = rows[0][6]
        kind = conn.execute("SELECT kind FROM actors WHERE id = %s", (recipient,)).fetchone()
    names = [c.strip() for c in COLUMNS.split(",")]
    return {
        "message": message_id,
        "actor": {"id": recipient, "kind": kind[0] if kind else None},
        "promises": [dict(zip(names, row, strict=True)) for row in rows],
    }


def write(name: str, journal: dict[str, Any]) -> None:
    path = HERE / f"{name}.json"
    path.write_text(json.dumps(journal, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path} ({len(journal['promises'])} promises)")


def main(dsn: str) -> None:
    with Runtime(dsn) as rt:
        clerk = rt.spawn(subjects.Clerk, id=subjects.CLERK)
        reply = clerk.ask(subjects.Order("tea", 3), id=f"{subjects.CLERK}/m/1")
        assert rt.store is not None
        store = rt.store

        def approve() -> None:
            promise = eventually(
                lambda: next(
                    (
                        p
                        for p in store.journal(reply.id).records
                        if p.kind.value == "promise" and not p.state.settled
                    ),
                    None,
                ),
                what="the clerk's promise",
            )
            store.resolve(promise.id, "approved")

        approver = threading.Thread(target=approve)
        approver.start()
        print(reply.get(timeout=30))
        approver.join()
        write("clerk_order", journal_of(dsn, reply.id))

        print(rt.run(subjects.WRITER, "Write about durability.", id=subjects.AGENT_RUN))
        write("agent_run", journal_of(dsn, subjects.AGENT_RUN))

        print(rt.run(subjects.LOOKER, "Look up journals.", id=subjects.TOOLS_RUN))
        write("agent_tools", journal_of(dsn, subjects.TOOLS_RUN))


if __name__ == "__main__":
    main(sys.argv[1])
