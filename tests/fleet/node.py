"""A fleet node for the tests: ``python -m tests.fleet.node DSN TYPES...`` hosts the named types
of ``tests.fleet.app`` until SIGTERM (a clean close: its actors handed over) or SIGKILL.
``FLEET_LOG_LEVEL`` (``INFO``, ``DEBUG``) sends the runtime's log to stderr.

It prints ``READY <node id>`` once open, and ``CLOSED`` after a clean close.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from promissory.runtime import Runtime
from tests.fleet.app import TYPES


def main(argv: list[str]) -> int:
    dsn, names = argv[0], argv[1:]
    level = os.environ.get("FLEET_LOG_LEVEL")
    if level:  # to stderr, which the tests keep (``Node.err``) and show when they fail
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    hosts = [TYPES[n] for n in names]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    rt = Runtime(
        dsn,
        hosts=hosts,
        adopt_interval=float(os.environ.get("FLEET_ADOPT_INTERVAL", "0.2")),
        adopt_grace=float(os.environ.get("FLEET_ADOPT_GRACE", "1.0")),
    ).open()
    print(f"READY {rt.node_id}", flush=True)
    done.wait()
    rt.close()
    print("CLOSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
