"""A node for the schedule tests: ``python -m tests.schedules.node DSN [--define]`` hosts the
``ticker`` agent until SIGTERM or SIGKILL; with ``--define`` it (re)defines the every-second
schedule ``ticks/every-second`` once open. It prints ``READY <node id>`` once open.
"""

from __future__ import annotations

import signal
import sys
import threading

from promissory import Agent, Runtime
from promissory.agents import FunctionModel

ticker = Agent("ticker", "Say tick.", model=FunctionModel(lambda request: "tick", name="tick"))


def main(argv: list[str]) -> int:
    dsn = argv[0]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    rt = Runtime(dsn, schedule_poll=0.2, adopt_interval=0.2, adopt_grace=1.0).open()
    if "--define" in argv:
        rt.schedule("ticks/every-second", cron="* * * * * *", agent=ticker, task="tick")
    print(f"READY {rt.node_id}", flush=True)
    done.wait()
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
