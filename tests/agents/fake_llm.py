"""A fake model provider on loopback: answers POSTs from a script, records every request.

``FakeProvider`` is a ``ThreadingHTTPServer`` on ``127.0.0.1:0`` in a background thread. A test
queues answers (``answer``: a status, headers and a JSON body; ``hang``: never answer) and reads
back what the adapter sent (``requests``: path, headers and the decoded JSON body). The helpers
below build answers in each provider's wire format (reference/agents.md section 5).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request the fake provider got."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Answer:
    """One scripted answer."""

    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False
    raw: bytes | None = None
    events: tuple[tuple[str | None, Any], ...] | None = None
    """Server-sent events to send one by one (name or ``None``, data; ``"[DONE]"`` as it is)."""
    delay: float = 0.0
    """Seconds between two events."""


class FakeProvider:
    """A loopback HTTP server that speaks whatever its script says (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.cut = 0
        """Streamed answers the client stopped reading before their end (it hung up)."""
        self._answers: deque[Answer | Callable[[Recorded], Answer]] = deque()
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def openai_url(self) -> str:
        """The base URL an OpenAI-compatible client is given."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """The base URL an Anthropic client is given."""
        return f"http://127.0.0.1:{self.port}"

    def answer(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> FakeProvider:
        """Queue an answer."""
        with self._lock:
            self._answers.append(Answer(status, body, tuple((headers or {}).items())))
        return self

    def answer_raw(self, data: bytes, status: int = 200) -> FakeProvider:
        """Queue an answer whose body is ``data`` as it is (not JSON)."""
        with self._lock:
            self._answers.append(Answer(status, raw=data))
        return self

    def answer_stream(
        self, events: list[tuple[str | None, Any]], *, delay: float = 0.0
    ) -> FakeProvider:
        """Queue a streamed answer: ``events`` sent as server-sent events, flushed one by one,
        ``delay`` seconds apart."""
        with self._lock:
            self._answers.append(Answer(events=tuple(events), delay=delay))
        return self

    def answer_with(self, fn: Callable[[Recorded], Answer]) -> FakeProvider:
        """Queue an answer computed from the request."""
        with self._lock:
            self._answers.append(fn)
        return self

    def hang(self) -> FakeProvider:
        """Queue a request that is never answered (until the server closes)."""
        with self._lock:
            self._answers.append(Answer(hang=True))
        return self

    def pending(self) -> int:
        """Answers queued and not yet given."""
        with self._lock:
            return len(self._answers)

    def _next(self, request: Recorded) -> Answer:
        with self._lock:
            self.requests.append(request)
            item = self._answers.popleft() if self._answers else None
        if item is None:
            return Answer(500, {"error": {"message": "the fake provider has no answer queued"}})
        return item(request) if callable(item) else item

    def close(self) -> None:
        """Stop serving; requests left hanging are let go."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
        fake: FakeProvider = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        body = json.loads(raw) if raw else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = fake._next(Recorded(self.path, headers, body))
        if answer.hang:
            fake.release.wait(30)
            return
        if answer.events is not None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for i, (name, data) in enumerate(answer.events):
                    if i and answer.delay:
                        time.sleep(answer.delay)
                    text = data if data == "[DONE]" else json.dumps(data)
                    head = f"event: {name}\n" if name else ""
                    self.wfile.write(f"{head}data: {text}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                with fake._lock:
                    fake.cut += 1
            return
        data = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        kind = "text/html" if answer.raw is not None else "application/json"
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        for key, value in answer.headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- OpenAI Chat Completions ------------------------------------------------------------------


def openai_answer(
    content: str | None = None,
    calls: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    *,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "gpt-test-2025",
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``calls`` are (id, name, arguments as a JSON string)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
            for id, name, arguments in calls
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }


def openai_error(message: str, type: str = "invalid_request_error", code: Any = None) -> Any:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


# -- Anthropic Messages -----------------------------------------------------------------------


def anthropic_answer(
    text: str | None = None,
    calls: list[tuple[str, str, Any]] = (),  # type: ignore[assignment]
    *,
    stop: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "claude-test-4",
) -> dict[str, Any]:
    """A ``message`` object; ``calls`` are (id, name, input object)."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.extend({"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls)
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop or ("tool_use" if calls else "end_turn"),
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 11, "output_tokens": 5},
    }


def anthropic_error(message: str, type: str = "invalid_request_error") -> Any:
    """An Anthropic error body."""
    return {"type": "error", "error": {"type": type, "message": message}}


# -- streamed answers (server-sent events) ---------------------------------------------------


def openai_stream(
    pieces: list[str],
    calls: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    *,
    usage: dict[str, Any] | None = None,
    model: str = "gpt-test-2025",
) -> list[tuple[str | None, Any]]:
    """``chat.completion.chunk`` events: the text in ``pieces``, then each call (id, name,
    its arguments in pieces), the finish reason, the usage chunk, and ``[DONE]``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events: list[tuple[str | None, Any]] = [(None, chunk({"role": "assistant", "content": ""}))]
    events += [(None, chunk({"content": p})) for p in pieces]
    for index, (id, name, arguments) in enumerate(calls):
        first = {"index": index, "id": id, "type": "function", "function": {"name": name}}
        events.append(
            (None, chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]}))
        )
        events += [
            (None, chunk({"tool_calls": [{"index": index, "function": {"arguments": a}}]}))
            for a in arguments
        ]
    events.append((None, chunk({}, "tool_calls" if calls else "stop")))
    events.append(
        (
            None,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": usage or {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
            },
        )
    )
    events.append((None, "[DONE]"))
    return events


def anthropic_stream(
    pieces: list[str],
    calls: list[tuple[str, str, list[str]]] = (),  # type: ignore[assignment]
    *,
    model: str = "claude-test-4",
) -> list[tuple[str | None, Any]]:
    """Messages stream events: the text in ``pieces`` (one text block), then each tool_use
    block (id, name, its input JSON in pieces), the stop reason and usage."""
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 11, "output_tokens": 1},
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    if pieces:
        events.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in pieces
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for i, (id, name, parts) in enumerate(calls, start=index):
        block = {"type": "tool_use", "id": id, "name": name, "input": {}}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": block},
            )
        )
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                },
            )
            for p in parts
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if calls else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 5},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events
