"""Time to the first streamed delta: the OpenAI adapter alone, beside an agent run's stream.

Usage::

    .venv/bin/python benchmarks/stream_latency.py [--dsn DSN] [--runs N]

A loopback server, in a process of its own, speaks Chat Completions with ``stream: true``: it
answers at once with one server-sent chunk of text, then a second 20 ms later, then
``[DONE]``. Each of ``--runs``
rounds (after 5 unmeasured) makes one call of the adapter alone and one agent run, in turn
(which goes first alternates), so each run has an adapter call beside it, at the same moment
of the machine. Figures, medians and 90th percentiles:

adapter      ``OpenAIChatModel.stream(request)`` on an event loop of its own, its connection
             kept alive as the runtime's is: from the call to its first piece of text.
run-start    ``rt.start(agent, ...)`` with a stream of that run already open in this process:
             from the call to the stream's first ``TextDelta``. This includes starting the run
             durably (its actor and its message committed, the actor activated).
relay        in the same runs: from the moment the adapter yielded its first piece (inside
             the model step) to the moment the stream gave it to the reader: what streaming
             through the runtime adds to a delta.
added        the runtime's added latency: run-start less the adapter call of its round, the
             median over the rounds (and the difference of the two medians, for reference).
handle       ``for event in rt.start(agent, ...).stream()``, the README's way: no id of one's
             own (``rt.start`` makes one up, so the model is asked as soon as the run's
             statement is sent, not once it is answered), the stream opened on the handle
             ``rt.start`` returns: from the call to the first ``TextDelta``; and its added
             latency, less the round's adapter call, as above.

With ``--remote`` the stream is opened on a store object of its own, as in another process:
it hears the run's start and its text by NOTIFY, which the announcer sends gathered
(``promissory.agents._stream.LINGER``), so the figures are a follower's in another process.

The schema ``promissory_bench_stream_<random>`` is made for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DEFAULT_DSN, percentile, with_search_path  # noqa: E402
from promissory import Runtime  # noqa: E402
from promissory.agents import (  # noqa: E402
    Agent,
    ModelRequest,
    ModelResponse,
    OpenAIChatModel,
    RunHandle,
    TextDelta,
)
from promissory.store import Store  # noqa: E402

GAP = 0.025
"""Seconds between two measured calls: a run's tail (its end's bookkeeping, the NOTIFYs its
announcer sends after ``LINGER``) is over before the next call is timed."""

CHUNK = (
    'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    '"delta":{"content":"%s"},"finish_reason":%s}]}\n\n'
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i, part in enumerate([CHUNK % ("Hello", "null"), CHUNK % (" world", '"stop"')]):
            if i:
                time.sleep(0.02)
            self._chunk(part.encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a kept-alive connection closed by a client whose event loop ended


class Timed:
    """The OpenAI adapter, noting when it yields its first piece of each call."""

    def __init__(self, inner: OpenAIChatModel) -> None:
        self.inner = inner
        self.name = inner.name
        self.early_start = getattr(inner, "early_start", False)  # as the adapter is asked
        self.first: list[float] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await self.inner.complete(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        first = True
        async for item in self.inner.stream(request):
            if first and isinstance(item, str):
                self.first.append(time.perf_counter())
                first = False
            yield item


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--remote", action="store_true", help="stream on a store of its own (by NOTIFY)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        # The model server, in a process of its own (as a real one is): its threads do not
        # share a GIL with what is measured.
        server = _Server(("127.0.0.1", 0), _Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        return 0
    serving = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert serving.stdout is not None
    base = f"http://127.0.0.1:{int(serving.stdout.readline())}/v1"
    request = ModelRequest(system="", messages=[], tools=[])

    # The adapter alone, on an event loop of its own (its connection kept alive, as the
    # runtime's adapter keeps its own), timed inside the loop.
    alone_loop = asyncio.new_event_loop()
    threading.Thread(target=alone_loop.run_forever, daemon=True).start()
    adapter = OpenAIChatModel("m", base_url=base, api_key="k")

    async def alone() -> float | None:
        started = time.perf_counter()
        first = None
        async for item in adapter.stream(request):  # read to its end, as the loop does
            if isinstance(item, str) and first is None:
                first = time.perf_counter() - started
        return first

    schema = f"promissory_bench_stream_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    timed = Timed(OpenAIChatModel("m", base_url=base, api_key="k"))
    agent = Agent("bench-streamer", "Say hello.", model=timed)
    adapter_times: list[float] = []
    start_times: list[float] = []
    relay_times: list[float] = []
    added: list[float] = []
    handle_times: list[float] = []
    handle_added: list[float] = []
    missed = 0
    try:
        with (
            Runtime(with_search_path(args.dsn, schema)) as rt,
            Store(with_search_path(args.dsn, schema)) as remote,
        ):
            assert rt.store is not None
            reading = remote if args.remote else rt.store

            def run_once(i: int) -> tuple[float, float] | None:
                run_id = f"bench/stream/{i}"
                got = threading.Event()
                seen: list[float] = []
                ready = threading.Event()

                def read() -> None:
                    stream = iter(RunHandle(run_id, reading).stream(poll=0.05))
                    ready.set()
                    for event in stream:
                        if isinstance(event, TextDelta) and not seen:
                            seen.append(time.perf_counter())
                            got.set()

                reader = threading.Thread(target=read, daemon=True)
                reader.start()
                ready.wait(5)
                time.sleep(0.05 if args.remote else 0.01)  # it has subscribed and read once
                started = time.perf_counter()
                rt.start(agent, "hi", id=run_id).result(timeout=30)
                got.wait(5)
                reader.join(5)
                if not seen:
                    return None
                return seen[0] - started, seen[0] - timed.first[-1]

            def handle_once() -> float | None:
                started = time.perf_counter()
                events = iter(rt.start(agent, "hi").stream(poll=0.05))
                try:
                    for event in events:
                        if isinstance(event, TextDelta):
                            # Its first piece, unless the stream came too late for it.
                            return time.perf_counter() - started if event.offset == 0 else None
                    return None
                finally:
                    events.close()  # type: ignore[attr-defined]  # stops listening at once

            for i in range(args.runs + 5):
                time.sleep(GAP)
                if i % 2 == 0:
                    a = asyncio.run_coroutine_threadsafe(alone(), alone_loop).result(30)
                    r = run_once(i)
                    time.sleep(GAP)
                    h = handle_once()
                else:
                    h = handle_once()
                    time.sleep(GAP)
                    r = run_once(i)
                    time.sleep(GAP)
                    a = asyncio.run_coroutine_threadsafe(alone(), alone_loop).result(30)
                if i >= 5 and a is not None and r is not None:
                    adapter_times.append(a)
                    start_times.append(r[0])
                    relay_times.append(r[1])
                    added.append(r[0] - a)
                    if h is None:
                        missed += 1
                    else:
                        handle_times.append(h)
                        handle_added.append(h - a)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        serving.kill()
        serving.wait()
        alone_loop.call_soon_threadsafe(alone_loop.stop)

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"| {name} | {statistics.median(ms):.2f} ms | {percentile(ms, 90):.2f} ms | {len(ms)} |"
        )

    print("| figure | median | p90 | runs |")
    print("|---|---|---|---|")
    print(row("adapter alone: call to first delta", adapter_times))
    print(row("runtime: rt.start to first TextDelta (stream open)", start_times))
    print(row("runtime relay: adapter's first delta to the stream's", relay_times))
    print(row("runtime's added latency (each run less its round's adapter call)", added))
    print(row("handle: rt.start(...).stream() to first TextDelta (id made up)", handle_times))
    print(row("handle's added latency (each run less its round's adapter call)", handle_added))
    apart = statistics.median(start_times) - statistics.median(adapter_times)
    print(
        f"\nruntime's added latency to the first delta: {statistics.median(added) * 1000:.2f} ms"
        f" (median of the rounds' differences; the medians' difference: {apart * 1000:.2f} ms)"
    )
    print(
        f"the same, stream on the handle rt.start returns: "
        f"{statistics.median(handle_added) * 1000:.2f} ms ({missed} streams opened after the "
        "first piece, left out)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
