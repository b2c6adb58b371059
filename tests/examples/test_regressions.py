"""Regressions: each test pins a bug found while writing this suite."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

from tests.cli.kit import Procs, sql

from .test_examples import http, start_service


def test_asyncio_service_closes_the_runtime_on_sigterm(procs: Procs, dsn: str) -> None:
    service, base = start_service(procs)
    status, _ = http("POST", f"{base}/runs", {"task": "x"})
    assert status == 202

    service.send(signal.SIGTERM)

    assert service.wait(20) == 0, service.stderr
    assert sql(dsn, "SELECT id FROM nodes WHERE ended_at IS NULL") == []  # closed, handed back


def post_raw(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_asyncio_service_answers_a_request_it_cannot_use_with_400_and_a_message(
    procs: Procs, dsn: str
) -> None:
    service, base = start_service(procs)
    bad = {
        b"{not json": "the body is not JSON",
        b"": "the body is not JSON",
        b"[1, 2]": "the body must be a JSON object",
        b"{}": '"task" must be a non-empty string',
        b'{"task": ""}': '"task" must be a non-empty string',
        b'{"task": 7}': '"task" must be a non-empty string',
    }
    for body, message in bad.items():
        status, answer = post_raw(f"{base}/runs", body)
        assert status == 400, (body, status, answer)
        assert answer["error"].startswith(message), (body, answer)
    # A run id the store refuses (a control character) is the client's mistake too.
    status, answer = http("GET", f"{base}/runs/bad%01id")
    assert status == 400, answer
    assert sql(dsn, "SELECT count(*) FROM promises WHERE kind = 'message'") == [(0,)]

    service.send(signal.SIGTERM)
    assert service.wait(20) == 0, service.stderr
    assert "Traceback" not in service.stderr
