"""The protocol's HTTP routes, as a Starlette application.

``POST /`` answers envelopes; ``GET /poll/{group}/{id}`` is a server-sent-events stream of
push messages (``data: <json>``); ``GET /health`` answers while the process runs, ``GET
/ready`` while the database answers too; the legacy REST paths (``/promises``, ``/schedules``,
``/tasks``) answer 410 Gone. With a token, ``POST /`` and ``/poll`` need it (``Authorization:
Bearer``, or the envelope's ``head.auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from ..errors import ServeError
from ..store import RpcStore, Store
from ._dispatch import answer, token_matches
from ._streams import Hub

KEEPALIVE = 15.0
"""Seconds between comment lines on an idle poll stream (keeps proxies from closing it)."""

_GONE = b'{"error":"This endpoint is no longer supported. Please update to the latest SDK."}'


def _bearer(headers: Any) -> str | None:
    value = headers.get("authorization")
    if value and value.lower().startswith("bearer "):
        return str(value[7:].strip())
    return None


def create_app(
    dsn: str, *, token: str | None = None, migrate: bool = True, max_streams: int = 1000
) -> Any:
    """The Starlette application serving the protocol on the store at ``dsn``.

    Args:
        dsn: the database.
        token: the bearer token every request must carry; ``None`` for none.
        migrate: bring the schema up to date when it starts.
        max_streams: the most poll streams held at once; one more is answered 503.

    Raises:
        ServeError: starlette is not installed (the ``serve`` extra).

    Example:
        >>> app = create_app("postgresql://localhost/app", token="s3cret")  # doctest: +SKIP
        >>> uvicorn.run(app, port=8001)  # doctest: +SKIP

    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise ServeError(
            f"serving the protocol needs the serve extra: pip install 'promissory[serve]' ({exc})"
        ) from None

    rpc = RpcStore(dsn)
    state: dict[str, Hub] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(lambda: Store(dsn).close())
        await rpc.open()
        hub = Hub(rpc, capacity=max_streams)
        hub.start()
        state["hub"] = hub
        try:
            yield
        finally:
            await hub.stop()
            await rpc.close()

    async def envelope(request: Request) -> Response:
        status, body = await answer(
            rpc, await request.body(), token=token, bearer=_bearer(request.headers)
        )
        return Response(body, status_code=status, media_type="application/json")

    async def poll(request: Request) -> Response:
        if not token_matches(_bearer(request.headers), token):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        hub = state["hub"]
        stream = hub.connect(request.path_params["group"], request.path_params["id"])
        if stream is None:
            return JSONResponse({"error": "too many poll streams"}, status_code=503)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(stream.queue.get(), KEEPALIVE)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if not message:
                        return
                    yield b"data: " + message + b"\n\n"
            finally:
                hub.disconnect(stream)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if await rpc.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "the database does not answer"}, status_code=503)

    async def gone(request: Request) -> Response:
        return Response(_GONE, status_code=410, media_type="application/json")

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE"]
    routes = [
        Route("/", envelope, methods=["POST"]),
        Route("/poll/{group}/{id}", poll, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    for legacy in ("promises", "schedules", "tasks", "locks"):
        routes.append(Route(f"/{legacy}", gone, methods=methods))
        routes.append(Route(f"/{legacy}/{{rest:path}}", gone, methods=methods))
    return Starlette(routes=routes, lifespan=lifespan)
