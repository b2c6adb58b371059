"""Regressions: each test pins a bug found while writing this suite."""

from __future__ import annotations

import signal

from tests.cli.kit import Procs, sql

from .test_examples import http, start_service


def test_asyncio_service_closes_the_runtime_on_sigterm(procs: Procs, dsn: str) -> None:
    service, base = start_service(procs)
    status, _ = http("POST", f"{base}/runs", {"task": "x"})
    assert status == 202

    service.send(signal.SIGTERM)

    assert service.wait(20) == 0, service.stderr
    assert sql(dsn, "SELECT id FROM nodes") == []  # the runtime was closed, lease handed back
