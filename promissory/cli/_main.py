"""The ``promissory`` command: one entry point, a subcommand per job.

Every subcommand takes ``--dsn`` (else ``$PROMISSORY_DSN``, else the embedded server) and
``--json``. Errors print one line to stderr (a JSON object with ``--json``) and exit non-zero;
they never show a traceback, nor a password. Everything printed for a person has its control
characters escaped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import PromissoryError
from ..store import scrub
from ._commands import EXIT_ERROR, EXIT_USAGE, CommandError, wants_json
from ._parser import UsageError, build_parser
from ._table import json_line, printable

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``promissory`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    as_json = "--json" in argv
    # Known before parsing, so that even a usage error never shows its password.
    dsn: str | None = _dsn_in(argv) or os.environ.get("PROMISSORY_DSN")
    try:
        args = parser.parse_args(argv)
        as_json = wants_json(args)
        dsn = getattr(args, "dsn", None) or dsn
        if not getattr(args, "handler", None):
            parser.print_help()
            return EXIT_USAGE
        result = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except UsageError as exc:
        return _report(str(exc), EXIT_USAGE, as_json, dsn)
    except CommandError as exc:
        return _report(str(exc), exc.status, as_json, dsn)
    except PromissoryError as exc:
        return _report(str(exc), EXIT_ERROR, as_json, dsn)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("PROMISSORY_DEBUG"):
            raise
        text = f"unexpected {type(exc).__name__}: {exc} (PROMISSORY_DEBUG=1 shows the traceback)"
        return _report(text, EXIT_ERROR, as_json, dsn)
    return int(result or 0)


def _dsn_in(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--dsn" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--dsn="):
            return arg.removeprefix("--dsn=")
    return None


def _report(message: str, status: int, as_json: bool, dsn: str | None) -> int:
    """Print an error as one line (never a password), as JSON with ``--json``."""
    lines = message.strip().splitlines()
    text = scrub(lines[0] if lines else "failed", dsn)
    if as_json:
        print(json_line({"error": text, "exit": status}), file=sys.stderr)
    else:
        print(printable(f"promissory: {text}"), file=sys.stderr)
    return status
