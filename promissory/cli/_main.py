"""The ``promissory`` command: one entry point, a subcommand per job.

Every subcommand takes ``--dsn`` (else ``$PROMISSORY_DSN``, else the embedded server) and
``--json``. Errors print one line to stderr and exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ..errors import ActorNotFoundError, InvalidInputError, PromiseNotFoundError, PromissoryError
from ..store import Promise, Store, resolve_dsn
from ._table import cell, render

EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``promissory`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        result = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except CommandError as exc:
        print(f"promissory: {exc}", file=sys.stderr)
        return exc.status
    except PromissoryError as exc:
        print(f"promissory: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the whole command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dsn",
        default=argparse.SUPPRESS,
        help="PostgreSQL connection string (default: $PROMISSORY_DSN, else the embedded server)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for machines"
    )
    parser = argparse.ArgumentParser(
        prog="promissory",
        description="A durable actor runtime for AI agents: every message and step is a "
        "promise kept in Postgres.",
        parents=[common],
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int | None], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    command("dsn", cmd_dsn, "print the DSN in use (starting the embedded server if it is the one)")
    p = command("sql", cmd_sql, "run a SQL query against the store and print the rows as a table")
    p.add_argument("query", help='the SQL to run, e.g. "SELECT id, state FROM promises"')
    command("migrate", cmd_migrate, "bring the database schema up to date")
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
        help="a real model for every agent, e.g. openai:gpt-4o-mini (default: offline model)",
    )
    p = command("run", cmd_run, "host the actors and agents of MODULE:ATTR until SIGTERM/SIGINT")
    p.add_argument(
        "target",
        metavar="MODULE:ATTR",
        help="a module, and in it a function called with the runtime, or actor classes",
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
    p = command("tree", cmd_tree, "print the supervision tree(s): status, restarts, pending")
    p.add_argument("id", nargs="?", default=None, help="the root actor (default: every tree)")
    p = command("show", cmd_show, "print a promise and the promises under it as a timeline")
    p.add_argument("id", help="the promise id, e.g. a run id")
    p = command("promises", cmd_promises, "list promises, oldest first")
    p.add_argument("--state", default=None, help="pending, resolved, rejected, ...")
    p.add_argument("--prefix", default=None, help="only ids starting with this")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    return parser


# -- shared helpers ----------------------------------------------------------------------------


def dsn_of(args: argparse.Namespace) -> str:
    """The DSN the command should use."""
    return resolve_dsn(getattr(args, "dsn", None))


CONNECT_TIMEOUT = 3.0
"""Seconds a command waits for its database before it says it cannot reach it."""


def open_store(args: argparse.Namespace) -> Store:
    """A store on the command's database, failing fast with one clear line."""
    return Store(dsn_of(args), reconnect_timeout=CONNECT_TIMEOUT)


def wants_json(args: argparse.Namespace) -> bool:
    """Whether ``--json`` was given."""
    return bool(getattr(args, "json", False))


def print_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    print(msgspec.json.encode(value).decode())


def promise_json(p: Promise) -> dict[str, Any]:
    """A promise as plain JSON-able data."""
    return {
        "id": p.id,
        "state": p.state.value,
        "kind": p.kind.value,
        "param": p.param_as(),
        "value": p.value_as(),
        "tags": p.tags,
        "timeout_at": p.timeout_at,
        "created_at": p.created_at,
        "settled_at": p.settled_at,
        "attempt": p.attempt,
    }


def parse_json_arg(text: str | None, what: str) -> Any:
    """The JSON value of an argument, or a one-line error naming the argument."""
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise CommandError(f"{what} is not valid JSON ({exc}): {text}", EXIT_USAGE) from None


# -- commands ----------------------------------------------------------------------------------


def cmd_dsn(args: argparse.Namespace) -> int:
    """Print the DSN in use."""
    dsn = dsn_of(args)
    if wants_json(args):
        print_json({"dsn": dsn})
    else:
        print(dsn)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Run a query and print its rows."""
    import psycopg

    from ..store._connection import configure

    dsn = dsn_of(args)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.ProgrammingError as exc:
        raise CommandError(f"not a usable DSN: {_first_line(exc)}") from None
    except psycopg.OperationalError as exc:
        raise CommandError(f"no database reachable at the DSN: {_first_line(exc)}") from None
    with conn:
        configure(conn)
        try:
            cur = conn.execute(args.query.encode())
        except psycopg.Error as exc:
            raise CommandError(f"the query failed: {_first_line(exc)}") from None
        if cur.description is None:
            if wants_json(args):
                print_json({"status": cur.statusmessage or "OK", "rowcount": cur.rowcount})
            else:
                print(cur.statusmessage or "OK")
            return 0
        columns = [c.name for c in cur.description]
        rows = cur.fetchall()
    if wants_json(args):
        print_json([{c: _json_cell(v) for c, v in zip(columns, row, strict=True)} for row in rows])
    else:
        print(render(columns, rows))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the schema up to date and say which version it is at."""
    with open_store(args) as store:
        if wants_json(args):
            print_json({"schema": store.schema, "version": store.version})
        else:
            print(f"schema {store.schema!r} is at version {store.version}")
    return 0


def _settle(args: argparse.Namespace, action: Callable[[Store], Any], verb: str) -> int:
    with open_store(args) as store:
        try:
            outcome = action(store)
        except PromiseNotFoundError:
            raise CommandError(f"no promise has the id {args.id!r}") from None
    p = outcome.promise
    if wants_json(args):
        print_json({"applied": outcome.applied, "promise": promise_json(p)})
    elif outcome.applied:
        print(f"{p.id}: {verb}")
    else:
        print(f"{p.id}: already {p.state.value}, left as it was", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """Resolve a promise."""
    value = parse_json_arg(args.value, "--value")
    return _settle(args, lambda s: s.resolve(args.id, value), "resolved")


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject a promise."""
    return _settle(args, lambda s: s.reject(args.id, args.error), "rejected")


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a promise (a run: it and everything under it) or an actor and its subtree."""
    with open_store(args) as store:
        if store.find(args.id) is None:
            try:
                outcome = store.cancel_actor(args.id, args.reason)
            except ActorNotFoundError:
                raise CommandError(f"no promise or actor has the id {args.id!r}") from None
            if wants_json(args):
                print_json(msgspec.to_builtins(outcome))
            elif outcome.applied:
                n = len(outcome.canceled)
                print(f"{args.id}: actor canceled, with {n} pending message(s); it ends")
            else:
                print(f"{args.id}: actor already ended, left as it was", file=sys.stderr)
                return EXIT_ERROR
            return 0
    return _settle(args, lambda s: s.cancel(args.id, args.reason), "canceled")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run (or resume) the research-team demo."""
    from ._demo import run_demo

    summary = run_demo(args, dsn_of(args), wants_json(args))
    if wants_json(args):
        print_json(summary)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Host a module's actors until told to stop."""
    from ._serve import TargetError, serve

    try:
        return serve(
            args.target, dsn_of(args), connect_timeout=CONNECT_TIMEOUT, as_json=wants_json(args)
        )
    except TargetError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a canceled or timed-out run, here, and print its result."""
    from ..runtime import Runtime
    from ._serve import TargetError, load_target

    if args.module:
        try:
            load_target(args.module)
        except TargetError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    with Runtime(dsn_of(args), connect_timeout=CONNECT_TIMEOUT) as rt:
        try:
            handle = rt.resume(args.id)
        except PromiseNotFoundError:
            raise CommandError(f"no run has the id {args.id!r}") from None
        except LookupError as exc:
            raise CommandError(f"{exc} (pass --module)") from None
        details = handle.details()
    if wants_json(args):
        print_json({"run_id": handle.id, "resumed": args.id, "result": details.output})
    else:
        print(f"{handle.id} (resuming {args.id}):\n{details.output}")
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    """Print supervision trees."""
    from ._inspect import load_trees, render_trees

    with open_store(args) as store:
        roots = load_trees(store, args.id)
    if args.id is not None and not roots:
        raise CommandError(f"no actor has the id {args.id!r}")
    if wants_json(args):
        print_json([r.as_json() for r in roots])
    else:
        print(render_trees(roots))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a promise and the promises under it as a timeline."""
    from ._inspect import timeline, timeline_rows

    with open_store(args) as store:
        promises = timeline(store, args.id)
    if not any(p.id == args.id for p in promises):
        raise CommandError(f"no promise has the id {args.id!r}")
    if wants_json(args):
        print_json([promise_json(p) for p in promises])
        return 0
    columns = ["id", "what", "state", "created", "settled", "attempt", "param / value"]
    print(render(columns, timeline_rows(promises, args.id)))
    return 0


def cmd_promises(args: argparse.Namespace) -> int:
    """List promises."""
    if args.limit < 1:
        raise CommandError(f"--limit must be at least 1, not {args.limit}", EXIT_USAGE)
    with open_store(args) as store:
        try:
            page = store.search(prefix=args.prefix, state=args.state, limit=args.limit)
        except InvalidInputError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    if wants_json(args):
        print_json([promise_json(p) for p in page.items])
        return 0
    rows = [
        (
            p.id,
            p.kind.value,
            p.state.value,
            p.created_at.isoformat(timespec="seconds"),
            cell(p.value),
        )
        for p in page.items
    ]
    print(render(["id", "kind", "state", "created", "value"], rows))
    if page.cursor is not None:
        print(f"(more: raise --limit to see past {args.limit})")
    return 0


def _json_cell(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value.decode(errors="replace")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
