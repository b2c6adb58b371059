"""``promissory forget ID [--force]``, and the durations ``promissory run --retention`` takes.

Forgetting deletes a finished run and everything of it (``Store.forget``), so its id can run
anew; a run that is not finished is refused, naming what is pending or running, unless forced.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta

import msgspec

from ..errors import RunNotFinishedError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds, as a ``timedelta``.

    Raises:
        argparse.ArgumentTypeError: anything else, or zero.

    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (write e.g. 30d, 12h, 90m, 45s, or seconds)"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def cmd_forget(args: argparse.Namespace) -> int:
    """Forget a finished run, or refuse, naming what is unfinished."""
    from ._commands import CommandError, open_store, print_json, wants_json

    with open_store(args) as store:
        try:
            forgotten = store.forget(args.id, force=args.force, timeout=args.timeout)
        except RunNotFinishedError as exc:
            raise CommandError(
                str(exc).replace("forget it with force", "forget it with --force")
            ) from None
    if wants_json(args):
        print_json(msgspec.to_builtins(forgotten))
        return 0 if forgotten.runs else 1
    if not forgotten.runs:
        print(f"{args.id}: no promise has this id; nothing to forget", file=sys.stderr)
        return 1
    more = [r for r in forgotten.runs if r != args.id]
    print(
        f"{args.id}: forgotten ({forgotten.promises} promises, {forgotten.actors} actors"
        + (f"; with its continuations {', '.join(more)}" if more else "")
        + (f"; {forgotten.canceled} pending canceled first" if forgotten.canceled else "")
        + ")"
    )
    return 0
