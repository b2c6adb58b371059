"""What the HTTP model adapters share: one async client per event loop, error kinds, and
server-sent events (the streamed answers of both wire formats).

Adapters run on the runtime's event loop (a model call is an async step). A provider's HTTP
failure becomes a ``ModelError`` whose kind says whether trying again can help; rate limits
carry the server's ``retry-after``.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..errors import ModelError

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def client_for(base_url: str, timeout: float) -> httpx.AsyncClient:
    """The shared client for ``base_url`` on the running loop (made on first use)."""
    loop = asyncio.get_running_loop()
    per_loop = _clients.setdefault(loop, {})
    key = f"{base_url}|{timeout}"
    client = per_loop.get(key)
    if client is None or client.is_closed:
        client = per_loop[key] = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(timeout, connect=10.0)
        )
    return client


async def post_json(
    base_url: str, path: str, body: Any, headers: dict[str, str], timeout: float, provider: str
) -> Any:
    """POST ``body`` as JSON and return the decoded answer, or raise a classified ModelError."""
    client = client_for(base_url, timeout)
    try:
        response = await client.post(path, json=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise ModelError(f"{provider}: the request timed out ({exc})", "timeout", True) from exc
    except httpx.TransportError as exc:
        raise ModelError(
            f"{provider}: could not reach {base_url}: {exc}", "connection", True
        ) from exc
    if response.status_code >= 400:
        raise error_from_response(response, provider)
    try:
        return response.json()
    except ValueError as exc:
        raise ModelError(
            f"{provider}: the answer is not JSON: {response.text[:200]}", "malformed_output", True
        ) from exc


def error_from_response(response: httpx.Response, provider: str) -> ModelError:
    """The ModelError an HTTP error status means."""
    status = response.status_code
    detail = _detail(response)
    message = f"{provider}: HTTP {status}: {detail}"
    if status == 429:
        return ModelError(message, "rate_limit", True, _retry_after(response), status)
    if status in (408, 409) or status >= 500:
        kind = "timeout" if status == 408 else "server"
        return ModelError(message, kind, True, _retry_after(response), status)
    if status in (401, 403):
        return ModelError(message, "auth", False, None, status)
    lowered = detail.lower()
    markers = ("context length", "context window", "context_length", "prompt is too long")
    if any(m in lowered for m in markers) or ("context" in lowered and "too long" in lowered):
        return ModelError(message, "context_length", False, None, status)
    return ModelError(message, "bad_request", False, None, status)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    if isinstance(error, str):
        return error[:300]
    return str(body)[:300]


async def post_sse(
    base_url: str, path: str, body: Any, headers: dict[str, str], timeout: float, provider: str
) -> AsyncIterator[tuple[str, Any]]:
    """POST ``body`` as JSON and yield the server-sent events of the answer as they arrive,
    as ``(event name, decoded data)`` (the name is ``""`` when the server gives none); a
    ``data: [DONE]`` ends the stream. A server that answers with plain JSON instead (it does
    not stream) gives one event named ``json``: the whole answer. Failures are classified
    ``ModelError``s, as ``post_json``'s are.
    """
    client = client_for(base_url, timeout)
    try:
        async with client.stream("POST", path, json=body, headers=headers) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response, provider)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                await response.aread()
                try:
                    whole = response.json()
                except ValueError as exc:
                    raise ModelError(
                        f"{provider}: the answer is neither a stream nor JSON: "
                        f"{response.text[:200]}",
                        "malformed_output",
                        True,
                    ) from exc
                yield "json", whole
                return
            name, data = "", []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # a comment (a keep-alive)
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
                    continue
                if data:  # a blank line ends an event
                    text = "\n".join(data)
                    if text == "[DONE]":
                        return
                    yield name, _decode_event(text, provider)
                name, data = "", []
            if data and "\n".join(data) != "[DONE]":
                yield name, _decode_event("\n".join(data), provider)
    except httpx.TimeoutException as exc:
        raise ModelError(f"{provider}: the request timed out ({exc})", "timeout", True) from exc
    except httpx.TransportError as exc:
        raise ModelError(
            f"{provider}: the stream from {base_url} broke: {exc}", "connection", True
        ) from exc


def _decode_event(text: str, provider: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelError(
            f"{provider}: a streamed event is not JSON: {text[:200]}", "malformed_output", True
        ) from exc
