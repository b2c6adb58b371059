"""Embedding promissory in a long-lived asyncio service (standard library only).

A small HTTP service: ``POST /runs`` with a JSON body ``{"task": "..."}`` starts an agent run
and answers its id at once; ``GET /runs/<id>`` answers its state, and its result once it has
one. A request it cannot use (malformed JSON, no task, a bad run id) is answered 400 with a
message. The runtime opens when the service starts and drains when it stops; runs in flight when
the service is killed continue on its next start.

    python examples/asyncio_service.py --port 8080
    curl -s -X POST localhost:8080/runs -d '{"task": "summarise the news"}'
    curl -s localhost:8080/runs/<id>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import urllib.parse
import uuid
from typing import Any

from promissory import Runtime
from promissory.agents import Agent, FunctionModel, ModelRequest, reply
from promissory.errors import InvalidInputError

summariser = Agent(
    "summariser",
    "Summarise the task in one line.",
    FunctionModel(lambda request: reply(f"Summary: {_task_of(request)[:60]}")),
)


def _task_of(request: ModelRequest) -> str:
    return request.messages[0].text


class BadRequest(Exception):
    """The request cannot be used as it is; answered 400 with this message."""


def task_of(body: bytes) -> str:
    """The task of a ``POST /runs`` body: a JSON object with a non-empty string ``task``."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object such as {"task": "..."}')
    task = data.get("task")
    if not isinstance(task, str) or not task.strip():
        raise BadRequest('"task" must be a non-empty string')
    return task


class Service:
    """The HTTP front of a runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self.route(reader)
        except (BadRequest, InvalidInputError) as exc:
            status, body = 400, {"error": str(exc)}
        except Exception as exc:  # one bad request must not take the service down
            status, body = 500, {"error": str(exc)}
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    async def route(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        request_line = (await reader.readline()).decode(errors="replace").split()
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode(errors="replace").strip()) != "":
            key, _, value = line.partition(":")
            headers[key.lower()] = value.strip()
        if len(request_line) < 2:
            raise BadRequest("not an HTTP request line")
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > 1_000_000:
            raise BadRequest(f"a bad Content-Length: {length!r}")
        body = await reader.readexactly(int(length))
        method, path = request_line[0], request_line[1]
        if method == "POST" and path == "/runs":
            task = task_of(body)
            run_id = f"service/{uuid.uuid4().hex[:12]}"
            # Starting a run writes two rows and returns: off the loop, it never blocks it.
            await asyncio.to_thread(self.rt.start, summariser, task, id=run_id)
            return 202, {"id": run_id}
        if method == "GET" and path.startswith("/runs/"):
            run_id = urllib.parse.unquote(path.removeprefix("/runs/"))
            assert self.rt.store is not None
            promise = await asyncio.to_thread(self.rt.store.find, run_id)
            if promise is None:
                return 404, {"error": f"no run {run_id}"}
            answer: dict[str, Any] = {"id": run_id, "state": promise.state.value}
            if promise.state.value == "resolved":
                answer["result"] = promise.value_as()["output"]
            return 200, answer
        return 404, {"error": "not found"}


async def serve(port: int, ready: asyncio.Event | None = None) -> None:
    """Run the service until cancelled; the runtime's life is the service's."""
    runtime = await asyncio.to_thread(Runtime().open)
    try:
        service = Service(runtime)
        server = await asyncio.start_server(service.handle, "127.0.0.1", port)
        async with server:
            print(f"serving on http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            if ready is not None:
                ready.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
                ready.set()
            await server.serve_forever()
    finally:
        await asyncio.to_thread(runtime.close)


async def main(port: int) -> None:
    """Serve until SIGTERM or SIGINT, then drain the runtime and exit cleanly."""
    task = asyncio.create_task(serve(port))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    asyncio.run(main(parser.parse_args().port))
