"""The ``promissory`` command's arguments: one parser, a subcommand per job, in four groups.

Every subcommand takes ``--dsn`` and ``--json``. A command line that does not parse raises
``UsageError`` (``main`` reports it in one line, as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import NoReturn

from .._version import __version__
from ._commands import (
    cmd_cancel,
    cmd_demo,
    cmd_dsn,
    cmd_migrate,
    cmd_nodes,
    cmd_promises,
    cmd_reject,
    cmd_resolve,
    cmd_resume,
    cmd_run,
    cmd_serve,
    cmd_show,
    cmd_sql,
    cmd_stop,
    cmd_tree,
    cmd_ui,
)
from ._forgetting import cmd_forget, parse_duration
from ._forking import cmd_fork
from ._inspect import ACTOR_STATUSES, MAX_LIMIT
from ._scheduling import ACTIONS, cmd_schedules

__all__ = ["UsageError", "build_parser"]

Handler = Callable[[argparse.Namespace], int | None]
Command = Callable[[str, Handler, str], argparse.ArgumentParser]
"""``command(name, handler, help)``: a subcommand's parser, with the common options."""


class UsageError(Exception):
    """The command line does not parse (said in one line, with where to find the usage)."""


class _Parser(argparse.ArgumentParser):
    # Errors are raised, so that main reports them as it reports every error (JSON too).
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,
        help="PostgreSQL connection string (default: $PROMISSORY_DSN, else the embedded server)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON, for machines (errors too, on stderr)",
    )
    parser = _Parser(
        prog="promissory",
        description="A durable actor runtime for AI agents: every message and step is a "
        "promise kept in Postgres.",
        epilog="With no DSN, commands use an embedded PostgreSQL that keeps running after "
        "they end (its data is in $PROMISSORY_HOME/pgdata); `promissory stop` stops it.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"promissory {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    _store_commands(command)
    _promise_commands(command)
    _run_commands(command)
    _inspect_commands(command)
    return parser


def _store_commands(command: Command) -> None:
    """The store itself: its DSN, SQL on it, its schema, the embedded server."""
    p = command(
        "dsn",
        cmd_dsn,
        "print the DSN in use, password masked (starting the embedded server if it is the one)",
    )
    p.add_argument(
        "--show-password", action="store_true", help="print the password too, as it is written"
    )
    p = command(
        "sql",
        cmd_sql,
        "run SQL against the store and print each statement's rows or status; read-only "
        "unless --write",
    )
    p.add_argument("query", help='the SQL to run, e.g. "SELECT id, state FROM promises"')
    p.add_argument(
        "--write",
        action="store_true",
        help="let the statements change data, each committed as it runs (default: they run "
        "in one read-only transaction)",
    )
    command("migrate", cmd_migrate, "bring the database schema up to date")
    command(
        "stop",
        cmd_stop,
        "stop the embedded PostgreSQL (it keeps running after other commands end); its data stays",
    )


def _promise_commands(command: Command) -> None:
    """Settling and canceling promises by hand."""
    p = command("resolve", cmd_resolve, "resolve a pending promise (human-in-the-loop)")
    p.add_argument("id", help="the promise id")
    p.add_argument("--value", default=None, help="the value, as JSON (default: null)")
    p = command("reject", cmd_reject, "reject a pending promise")
    p.add_argument("id", help="the promise id")
    p.add_argument("--error", default=None, help="the error text")
    p = command(
        "cancel", cmd_cancel, "cancel a run (a pending promise) or an actor, and all under it"
    )
    p.add_argument("id", help="the promise id, or an actor id")
    p.add_argument("--reason", default=None, help="why it was canceled")


def _run_commands(command: Command) -> None:
    """Running things: the demo, a module's actors and agents, a run resumed."""
    p = command(
        "demo",
        cmd_demo,
        "run the research-team demo (resumes the newest unfinished demo run, if any)",
    )
    p.add_argument(
        "--crash-after",
        type=int,
        default=None,
        metavar="N",
        help="kill this process with SIGKILL after N more model and tool steps are kept "
        "(run the demo again to resume)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="SPEC",
        help="a real model for every agent, e.g. openai:gpt-4o-mini (default: offline model); "
        "an unfinished run resumes only on the model it was started with",
    )
    _quiet(p)
    p = command("run", cmd_run, "host the actors and agents of MODULE:ATTR until SIGTERM/SIGINT")
    _quiet(p)
    p.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a module, and in it a function called with the runtime, or actor classes",
    )
    p.add_argument(
        "--retention",
        type=parse_duration,
        default=None,
        metavar="AGE",
        help="forget top-level runs finished longer ago than AGE (e.g. 30d, 12h): their "
        "promises, all under them, what they own, their actors (default: keep everything)",
    )
    p = command(
        "resume", cmd_resume, "continue a canceled or timed-out run from its last whole turn"
    )
    p.add_argument("id", help="the run's id")
    p.add_argument(
        "--module",
        default=None,
        help="a module to import first, where the run's agents are defined",
    )
    _quiet(p)
    p = command(
        "fork",
        cmd_fork,
        "start a new run that reuses a run's kept steps before STEP and runs the rest anew "
        "(with --prompt or --model changed); host it here and print its result",
    )
    p.add_argument("id", help="the run to fork (it stays as it is)")
    p.add_argument(
        "--at",
        required=True,
        metavar="STEP",
        help="the first step to run anew: its position (1 for the first; `promissory show ID` "
        "lists them) or its id",
    )
    p.add_argument("--prompt", default=None, help="the system prompt the fork runs with")
    p.add_argument(
        "--model", default=None, metavar="SPEC", help="the model it runs with (e.g. openai:gpt-4o)"
    )
    p.add_argument(
        "--id",
        dest="fork_id",
        default=None,
        help="the fork's id (default: the next free ID~forkN; an existing one is joined)",
    )
    p.add_argument(
        "--module",
        default=None,
        help="a module to import first, where the run's agents are defined",
    )
    _quiet(p)
    p = command(
        "forget",
        cmd_forget,
        "delete a finished run and all of it (its steps, sub-agents, continuations, the "
        "promises it owns, its actors), so its id can run anew",
    )
    p.add_argument("id", help="the run's id")
    p.add_argument(
        "--force",
        action="store_true",
        help="a run not finished: cancel it, wait for its actors to end, then forget it",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --force, how long to wait for the run's actors to end (default 60)",
    )


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines on stderr (runs starting, resuming, waiting, finishing; "
        "restarts; recovery), only warnings and errors",
    )


def _inspect_commands(command: Command) -> None:
    """Looking at what the store holds: trees, timelines, nodes, promises."""
    p = command(
        "tree",
        cmd_tree,
        "print the supervision tree(s): each actor's status, restarts and pending messages",
    )
    p.add_argument(
        "id",
        nargs="?",
        default=None,
        help="the root actor: it and its descendants (default: every tree)",
    )
    p.add_argument(
        "--status",
        choices=list(ACTOR_STATUSES),
        default=None,
        help="only actors in this status: "
        + "; ".join(f"{k}: {v}" for k, v in ACTOR_STATUSES.items()),
    )
    p.add_argument(
        "--limit", type=_limit, default=1000, help="at most this many actors (default 1000)"
    )
    p = command(
        "show",
        cmd_show,
        "print a promise and the promises under it as a timeline, or an actor: its status, "
        "incarnation and state",
    )
    p.add_argument("id", help="a promise id (e.g. a run id) or an actor id")
    p.add_argument(
        "--actor",
        action="store_true",
        help="show the actor with this id even if a promise has it too (an agent run's actor "
        "has its run's id)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="an agent run as it happens, from its start: the model's text as it is written, "
        "tool calls, sub-agents, its end (exits when it ends; --json: one event a line)",
    )
    p = command(
        "nodes",
        cmd_nodes,
        "list the live nodes (and those that ended in the last hour): host, pid, when each "
        "started, the actor types it hosts, how many actors it holds",
    )
    p.add_argument(
        "--recent",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="also list nodes that ended this recently (default 3600)",
    )
    p = command(
        "ui",
        cmd_ui,
        "serve a live web view of the store (trees, runs, promises, approvals) on "
        "127.0.0.1, with an access token in the URL it prints",
    )
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument(
        "--port", type=int, default=8765, help="the port (default 8765; 0: any free port)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("PROMISSORY_UI_TOKEN", ""),
        help="the access token (default: $PROMISSORY_UI_TOKEN, else a random one)",
    )
    p.add_argument(
        "--no-token",
        action="store_true",
        help="serve without a token (refused unless --host is a loopback address)",
    )
    p.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="M",
        help="a module to import first, where agents are defined, so their runs can be "
        "resumed from the view (repeatable)",
    )
    p = command(
        "schedules",
        cmd_schedules,
        "list the schedules (cron, zone, what each runs, next firing, last run), or pause, "
        "resume or delete one",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=ACTIONS,
        default="list",
        help="list (the default), pause, resume (from now: firings that fell while paused are "
        "not made) or delete (its runs stay)",
    )
    p.add_argument(
        "id", nargs="?", default=None, help="the schedule (for list: an id prefix to filter by)"
    )
    p = command(
        "serve",
        cmd_serve,
        "serve the durable-promise protocol (Resonate's, version 2026-04-01) on 127.0.0.1: "
        "POST / envelopes and GET /poll/GROUP/ID event streams, so Resonate SDK workers run "
        "on this store",
    )
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument(
        "--port", type=int, default=8001, help="the port (default 8001; 0: any free port)"
    )
    p.add_argument(
        "--token",
        default=None,
        help="the bearer token every request must carry (default: $PROMISSORY_SERVE_TOKEN; "
        "required unless --host is a loopback address)",
    )
    p.add_argument(
        "--max-streams",
        type=_positive,
        default=1000,
        help="the most poll streams this node holds at once; one more is answered 503 "
        "(default 1000)",
    )
    p = command("promises", cmd_promises, "list promises, oldest first")
    p.add_argument("--state", default=None, help="pending, resolved, rejected, ...")
    p.add_argument("--prefix", default=None, help="only ids starting with this")
    p.add_argument("--limit", type=_limit, default=50, help="at most this many (default 50)")


def _limit(text: str) -> int:
    return _whole(text, MAX_LIMIT)


def _positive(text: str) -> int:
    return _whole(text, 1_000_000)


def _whole(text: str, most: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"must be between 1 and {most}, not {text}")
    return value


# -- shared helpers ----------------------------------------------------------------------------
