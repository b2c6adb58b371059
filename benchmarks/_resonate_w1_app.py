"""W1 with Resonate's SDK (run under Python 3.12 by ``resonate_w1.py``): one durable function of
N sequential ``ctx.run`` steps against a server.

The server is named by TARGET: an ``http://`` URL is a Resonate server (``promissory serve``),
reached by the SDK's own HTTP connection; anything else is a PostgreSQL conninfo of a database
holding resonate-pg's ``resonate.sql``, reached by the ``resonate-pg`` connector (the same
function, the same SDK, only the connection differs, so the two servers are compared on one
client).

It warms up (WARM runs of each N in NS), prints ``ready``, and then reads commands from stdin:
``run N K`` runs ``w1`` K times one after another with N steps and prints ``done S1 … SK`` (the
wall seconds of each, from ``r.run`` to its result); ``quit`` (or end of input) stops it. The
parent reads the database's counters between commands, so only the commands' work is in them.
"""

import asyncio
import sys
import time
import uuid

from resonate.context import Context
from resonate.resonate import Resonate


def step(ctx: Context, total: int, i: int) -> int:
    return total + i


async def w1(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total = await ctx.run(step, total, i)
    return total


def connect(target: str) -> Resonate:
    """A Resonate client of ``target``: the SDK's HTTP connection for a URL, the resonate-pg
    connector (as Resonate's README sets it up: one group for the node and its tasks) for a
    conninfo."""
    if target.startswith(("http://", "https://")):
        return Resonate(url=target)
    from resonate_pg import PostgresConnection

    return Resonate(network=PostgresConnection(target, group="workers"), group="workers")


async def runs(r: Resonate, n: int, k: int) -> list[float]:
    """The wall seconds of ``k`` runs of ``w1(n)``, one after another."""
    seconds = []
    for _ in range(k):
        started = time.perf_counter()
        result = await r.run(f"w1-{uuid.uuid4().hex[:12]}", w1, n).result()
        seconds.append(time.perf_counter() - started)
        assert result == n * (n - 1) // 2, result
    return seconds


async def main(target: str, ns: list[int], warm: int) -> None:
    r = connect(target)
    r.register(w1)
    loop = asyncio.get_running_loop()
    try:
        for n in ns:
            await runs(r, n, warm)
        print("ready", flush=True)
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                break
            assert line[0] == "run", line
            seconds = await runs(r, int(line[1]), int(line[2]))
            print("done " + " ".join(f"{s:.6f}" for s in seconds), flush=True)
    finally:
        await r.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [int(n) for n in sys.argv[2].split(",")], int(sys.argv[3])))
