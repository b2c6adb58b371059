"""What each ``promissory`` subcommand does, given its parsed arguments.

A command returns its exit status, or raises ``CommandError`` (one line, with a status) or a
``PromissoryError``; ``main`` reports either in one line. Everything printed for a person has
its control characters escaped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from ..errors import ActorNotFoundError, InvalidInputError, PromiseNotFoundError
from ..store import Promise, Store, check_dsn, node_listing, redact, resolve_dsn
from ._table import cell, json_line, printable, render

EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def dsn_of(args: argparse.Namespace) -> str:
    """The DSN the command should use, checked to parse."""
    return check_dsn(resolve_dsn(getattr(args, "dsn", None)))


CONNECT_TIMEOUT = 3.0
"""Seconds a command waits for its database before it says it cannot reach it."""


def open_store(args: argparse.Namespace) -> Store:
    """A store on the command's database (its schema created or migrated), failing fast.

    The failure is one clear line.
    """
    return Store(dsn_of(args), reconnect_timeout=CONNECT_TIMEOUT)


def wants_json(args: argparse.Namespace) -> bool:
    """Whether ``--json`` was given."""
    return bool(getattr(args, "json", False))


def print_json(value: Any) -> None:
    """Print ``value`` as one line of JSON (safe to show in a terminal)."""
    print(json_line(value))


def say(text: str) -> None:
    """Print ``text`` for a person, control characters escaped (line breaks kept)."""
    print(printable(text, newlines=True))


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
    """Print the DSN in use (its password masked unless asked)."""
    dsn = dsn_of(args)
    shown = dsn if args.show_password else redact(dsn)
    if wants_json(args):
        print_json({"dsn": shown})
    else:
        say(shown)
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Run statements and print what each did."""
    from ._query import run_and_print

    with open_store(args):
        pass  # the schema exists (created or migrated) before the query reads it
    run_and_print(
        dsn_of(args),
        args.query,
        write=args.write,
        as_json=wants_json(args),
        connect_timeout=CONNECT_TIMEOUT,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the schema up to date and say which version it is at."""
    with open_store(args) as store:
        if wants_json(args):
            print_json({"schema": store.schema, "version": store.version})
        else:
            say(f"schema {store.schema!r} is at version {store.version}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the embedded server, if it runs."""
    from ..store import home, stop_embedded

    if getattr(args, "dsn", None) or os.environ.get("PROMISSORY_DSN"):
        raise CommandError(
            "stop stops the embedded server, and a DSN is set: its server is not promissory's "
            "to stop",
            EXIT_USAGE,
        )
    data_dir = home() / "pgdata"
    stopped = stop_embedded(data_dir)
    if wants_json(args):
        print_json({"stopped": stopped, "data_dir": str(data_dir)})
    elif stopped:
        say(f"stopped the embedded PostgreSQL in {data_dir} (its data stays)")
    else:
        say(f"no embedded PostgreSQL is running in {data_dir}")
    return 0


def _settle(args: argparse.Namespace, action: Callable[[Store], Any], verb: str) -> int:
    with open_store(args) as store:
        try:
            outcome = action(store)
        except PromiseNotFoundError:
            raise CommandError(f"no promise has the id {args.id!r}") from None
    return _said(args, outcome, verb)


def _said(args: argparse.Namespace, outcome: Any, verb: str) -> int:
    p = outcome.promise
    if wants_json(args):
        print_json({"applied": outcome.applied, "promise": promise_json(p)})
    elif outcome.applied:
        say(f"{p.id}: {verb}")
    else:
        print(printable(f"{p.id}: already {p.state.value}, left as it was"), file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    """Resolve a promise."""
    from . import _actions

    value = parse_json_arg(args.value, "--value")
    return _settle(args, lambda s: _actions.resolve(s, args.id, value), "resolved")


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject a promise."""
    from . import _actions

    return _settle(args, lambda s: _actions.reject(s, args.id, args.error), "rejected")


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a promise (a run: it and everything under it) or an actor and its subtree."""
    from . import _actions

    with open_store(args) as store:
        try:
            done = _actions.cancel(store, args.id, args.reason)
        except ActorNotFoundError:
            raise CommandError(f"no promise or actor has the id {args.id!r}") from None
    if done.what == "promise":
        assert done.outcome is not None
        return _said(args, done.outcome, "canceled")
    if wants_json(args):
        print_json({"actor": args.id, "applied": done.applied, "canceled": done.messages})
    elif done.applied:
        n = len(done.messages)
        say(f"{args.id}: actor canceled, with {n} pending message(s); it ends")
    else:
        print(printable(f"{args.id}: actor already ended, left as it was"), file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run (or resume) the research-team demo."""
    from ._demo import run_demo
    from ._progress import progress

    with progress(args):
        summary = run_demo(args, dsn_of(args), wants_json(args))
    if wants_json(args):
        print_json(summary)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Host a module's actors until told to stop."""
    from ._progress import progress
    from ._serve import TargetError, TargetFailedError, serve

    try:
        # The target is imported and checked first: the DSN (perhaps the embedded server,
        # started to be found) only once it is known to be runnable.
        with progress(args):
            return serve(
                args.target,
                lambda: dsn_of(args),
                connect_timeout=CONNECT_TIMEOUT,
                as_json=wants_json(args),
                retention=args.retention,
            )
    except TargetError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except TargetFailedError as exc:
        raise CommandError(str(exc)) from None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a canceled or timed-out run, here, and print its result."""
    from ..agents import RunHandle
    from ..runtime import Runtime
    from . import _actions
    from ._progress import progress
    from ._serve import TargetError, load_target

    if args.module:
        try:
            load_target(args.module)
        except TargetError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
    with progress(args), Runtime(dsn_of(args), connect_timeout=CONNECT_TIMEOUT) as rt:
        assert rt.store is not None
        try:
            handle = RunHandle(_actions.resume(rt, args.id), rt.store)
        except PromiseNotFoundError:
            raise CommandError(f"no run has the id {args.id!r}") from None
        except LookupError as exc:
            raise CommandError(f"{exc} (pass --module)") from None
        details = handle.details()
    if wants_json(args):
        print_json({"run_id": handle.id, "resumed": args.id, "result": details.output})
    else:
        say(f"{handle.id} (resuming {args.id}):\n{details.output}")
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    """Print supervision trees."""
    from ._inspect import load_trees, render_trees

    with open_store(args) as store:
        roots, more = load_trees(store, args.id, status=args.status, limit=args.limit)
        if args.id is not None and not roots and _actor_missing(store, args.id):
            raise CommandError(f"no actor has the id {args.id!r}")
    if wants_json(args):
        print_json([r.as_json() for r in roots])
        return 0
    print(render_trees(roots))
    if more:
        print(f"(more: raise --limit to see past {args.limit})")
    return 0


def _actor_missing(store: Store, id: str) -> bool:
    return store.actor_row(id) is None


def cmd_show(args: argparse.Namespace) -> int:
    """Print a promise and the promises under it as a timeline, or an actor."""
    from ._inspect import fork_links, load_actor, render_actor, timeline, timeline_rows

    if args.follow:
        from ._follow import follow

        with open_store(args) as store:
            if store.find(args.id) is None:
                raise CommandError(f"no run has the id {args.id!r}")
            ended = follow(store, args.id, as_json=wants_json(args))
        return 0 if ended.state == "resolved" else 1
    with open_store(args) as store:
        promises = [] if args.actor else timeline(store, args.id)
        root = next((p for p in promises if p.id == args.id), None)
        found = root is not None
        actor = None if found else load_actor(store, args.id)
        links = fork_links(store, root) if root is not None else []
    if actor is not None:
        if wants_json(args):
            print_json(actor)
        else:
            print(render_actor(actor))
        return 0
    if not found:
        what = "actor" if args.actor else "promise or actor"
        raise CommandError(f"no {what} has the id {args.id!r}")
    if wants_json(args):
        print_json([promise_json(p) for p in promises])
        return 0
    columns = ["id", "what", "state", "created", "settled", "attempt", "param / value"]
    print(render(columns, timeline_rows(promises, args.id)))
    for line in links:
        say(line)
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    """List the fleet's nodes."""
    with open_store(args) as store:
        nodes = node_listing(store, recent=args.recent)
    if wants_json(args):
        print_json([msgspec.to_builtins(n) for n in nodes])
        return 0
    if not nodes:
        say("(no nodes)")
        return 0
    rows = [
        [
            n.id,
            "live" if n.live else "ended",
            n.host or "",
            str(n.pid or ""),
            n.started_at.isoformat(timespec="seconds") if n.started_at else "",
            n.ended_at.isoformat(timespec="seconds") if n.ended_at else "",
            str(n.actors),
            ", ".join(n.kinds),
        ]
        for n in nodes
    ]
    print(render(["node", "state", "host", "pid", "started", "ended", "actors", "hosts"], rows))
    return 0


def cmd_promises(args: argparse.Namespace) -> int:
    """List promises."""
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


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the web view until SIGINT or SIGTERM."""
    try:
        from ..ui import ServeError, is_loopback, serve
    except ImportError as exc:
        raise CommandError(
            f"the web view needs the ui extra: pip install 'promissory[ui]' ({exc})"
        ) from None
    from ._serve import TargetError

    if args.no_token and not is_loopback(args.host):
        # Before anything else: no database (nor embedded server) for a refused address.
        raise CommandError(
            f"refusing to serve on {args.host}, which is not a loopback address, without a "
            "token: anyone who reaches it could read the store and cancel runs (drop --no-token)",
            EXIT_USAGE,
        )

    def said(url: str, facts: dict[str, Any]) -> None:
        if wants_json(args):
            print_json({"event": "serving", **facts})
        else:
            say(f"promissory ui: {url}  (Ctrl-C stops it)")
        sys.stdout.flush()

    try:
        return serve(
            dsn_of(args),
            host=args.host,
            port=args.port,
            token=None if args.no_token else args.token,
            modules=args.module,
            say=said,
            connect_timeout=CONNECT_TIMEOUT,
        )
    except (ServeError, TargetError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the durable-promise protocol until SIGINT or SIGTERM."""
    try:
        from ..protocol import serve
    except ImportError as exc:
        raise CommandError(
            f"serving the protocol needs the serve extra: pip install 'promissory[serve]' ({exc})"
        ) from None
    from ..errors import ServeError
    from ..protocol import check_address

    try:
        # Before anything else: no database (nor embedded server) for a refused address.
        token = check_address(args.host, args.token)
    except ServeError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None

    def said(url: str) -> None:
        if wants_json(args):
            print_json({"event": "serving", "url": url, "host": args.host})
        else:
            say(f"promissory serve: {url}  (Ctrl-C stops it)")
        sys.stdout.flush()

    try:
        return serve(
            dsn_of(args),
            host=args.host,
            port=args.port,
            token=token,
            max_streams=args.max_streams,
            say=said,
        )
    except ServeError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
