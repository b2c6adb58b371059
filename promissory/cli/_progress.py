"""Progress lines: what ``run``, ``resume`` and ``demo`` are doing, as it happens.

The runtime says what it does on the ``promissory.*`` loggers (the README lists them and what
each says at INFO). While a command runs, ``progress`` prints their INFO records to stderr,
one line each with the time (``12:00:03 run agent/run/42 (lead) waits on …``), or with
``--json`` one JSON object each (``{"event": "run.waiting", "message": …, "run": …}``); with
``--quiet`` only warnings and errors, as Python prints them by default.

Example:
    >>> with progress(args):  # doctest: +SKIP
    ...     handle = rt.resume(args.id)

"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ._table import json_line, printable


class ProgressPrinter(logging.Handler):
    """Prints log records for a person (or, ``as_json``, a machine), one line each."""

    def __init__(self, stream: TextIO, *, as_json: bool = False) -> None:
        super().__init__(logging.INFO)
        self.stream = stream
        self.as_json = as_json

    def emit(self, record: logging.LogRecord) -> None:
        """Print ``record`` (escaped: stored ids and errors may hold anything)."""
        try:
            message = record.getMessage()
            facts: dict[str, Any] = dict(getattr(record, "promissory", None) or {})
            if self.as_json:
                event = facts.pop("event", "log")
                line = json_line(
                    {
                        "event": event,
                        "level": record.levelname.lower(),
                        "logger": record.name,
                        "message": message,
                        **facts,
                    }
                )
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
                level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
                line = printable(f"{stamp} {level}{message}")
            self.stream.write(line + "\n")
            self.stream.flush()
        except Exception:  # a progress line never fails the command
            self.handleError(record)


@contextlib.contextmanager
def progress(args: argparse.Namespace) -> Iterator[None]:
    """Print the runtime's progress while the block runs, unless ``--quiet`` was given."""
    if getattr(args, "quiet", False):
        yield
        return
    logger = logging.getLogger("promissory")
    handler = ProgressPrinter(sys.stderr, as_json=bool(getattr(args, "json", False)))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
