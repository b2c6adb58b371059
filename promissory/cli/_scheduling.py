"""``promissory schedules``: list the schedules, or pause, resume or delete one.

The command works on the store alone (no node needs to run): a pause or a delete is seen by
every node at its next look; a resume sets the next firing from now, by the database's clock.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from ..errors import ScheduleNotFoundError
from ..runtime import pause_schedule, resume_schedule
from ..store import Schedule, delete_schedule, list_schedules
from ._commands import EXIT_USAGE, CommandError, open_store, print_json, say, wants_json
from ._table import render

__all__ = ["ACTIONS", "cmd_schedules"]

ACTIONS = ("list", "pause", "resume", "delete")


def cmd_schedules(args: argparse.Namespace) -> int:
    """List the schedules, or pause, resume or delete the one named."""
    action: str = args.action
    if action != "list" and not args.id:
        raise CommandError(f"schedules {action} needs the schedule's id", EXIT_USAGE)
    with open_store(args) as store:
        if action == "list":
            found = list_schedules(store, args.id or "")
            if wants_json(args):
                print_json([_as_json(s) for s in found])
            elif not found:
                say("(no schedules)")
            else:
                print(
                    render(
                        ["schedule", "cron", "zone", "runs", "state", "next", "last run"],
                        [_row(s) for s in found],
                    )
                )
            return 0
        try:
            if action == "delete":
                if not delete_schedule(store, args.id):
                    raise ScheduleNotFoundError(f"no schedule has the id {args.id!r}")
                changed: Schedule | None = None
            elif action == "pause":
                changed = pause_schedule(store, args.id)
            else:
                changed = resume_schedule(store, args.id)
        except ScheduleNotFoundError as exc:
            raise CommandError(str(exc)) from None
    if wants_json(args):
        print_json({"id": args.id, "action": action, "schedule": _as_json(changed)})
    elif changed is None:
        say(f"deleted schedule {args.id} (its runs stay)")
    elif changed.paused:
        say(f"paused schedule {args.id}")
    else:
        say(f"resumed schedule {args.id}; next firing {changed.next_at.isoformat()}")
    return 0


def _as_json(schedule: Schedule | None) -> Any:
    return msgspec.to_builtins(schedule) if schedule is not None else None


def _row(s: Schedule) -> list[str]:
    return [
        s.id,
        s.cron,
        s.timezone,
        s.kind,
        "paused" if s.paused else "active",
        "" if s.paused else s.next_at.isoformat(timespec="seconds"),
        s.last_run or "",
    ]
