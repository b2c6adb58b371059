"""Durable functions written with Resonate's Python SDK (0.8.1), run under Python 3.12 against a
promissory node by the conformance tests.

    python resonate_app.py worker URL GROUP           serve the functions until killed
    python resonate_app.py run URL GROUP ID FUNC ARGS  run FUNC(*ARGS) as ID, print its result

A worker appends a line to $APP_LOG for each step it really runs, so a test counts side effects.
"""

import asyncio
import json
import os
import sys
import time
from datetime import timedelta

from resonate.context import Context
from resonate.resonate import Resonate


def note(line: str) -> None:
    path = os.environ.get("APP_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()


def add(ctx: Context, total: int, i: int) -> int:
    note(f"add {i}")
    return total + i


async def steps(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total = await ctx.run(add, total, i)
    return total


async def sleeper(ctx: Context, secs: float) -> str:
    before = await ctx.run(add, 0, 1)
    await ctx.sleep(timedelta(seconds=secs))
    after = await ctx.run(add, before, 2)
    return f"woke {after}"


async def approval(ctx: Context, x: int) -> dict:
    decision = await ctx.promise(timeout=timedelta(minutes=5))
    return {"x": x, "decision": decision}


async def callee(ctx: Context, x: int) -> str:
    note(f"callee {x} on {os.environ.get('APP_NAME', '?')}")
    return f"callee saw {x}"


async def caller(ctx: Context, x: int) -> str:
    got = await ctx.options(target="second").rpc("callee", x)
    return f"caller got [{got}]"


def slow_step(ctx: Context, i: int) -> int:
    note(f"slow {i} on {os.environ.get('APP_NAME', '?')}")
    if os.environ.get("APP_SLOW") == "1":
        time.sleep(120)
    return i * 10


async def crashy(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.run(slow_step if i == 1 else add, *((i,) if i == 1 else (total, i)))
    return total


FUNCS = [steps, sleeper, approval, callee, caller, crashy]


def make(url: str, group: str) -> Resonate:
    ttl = float(os.environ.get("APP_TTL", "60"))
    token = os.environ.get("APP_TOKEN")
    r = Resonate(url=url, group=group, ttl=timedelta(seconds=ttl), token=token)
    for f in FUNCS:
        r.register(f)
    return r


async def worker(url: str, group: str) -> None:
    r = make(url, group)
    print("worker ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await r.stop()


async def run(url: str, group: str, id: str, func: str, args: list) -> None:
    r = make(url, group)
    try:
        handle = r.run(id, func, *args)
        result = await asyncio.wait_for(handle.result(), 90)
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        await r.stop()


async def rpc(url: str, group: str, id: str, func: str, target: str, args: list) -> None:
    r = make(url, group)
    try:
        handle = r.options(target=target).rpc(id, func, *args)
        result = await asyncio.wait_for(handle.result(), 90)
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        await r.stop()


if __name__ == "__main__":
    mode, url, group = sys.argv[1:4]
    if mode == "worker":
        asyncio.run(worker(url, group))
    elif mode == "run":
        asyncio.run(run(url, group, sys.argv[4], sys.argv[5], json.loads(sys.argv[6])))
    elif mode == "rpc":
        asyncio.run(rpc(url, group, sys.argv[4], sys.argv[5], sys.argv[6], json.loads(sys.argv[7])))
