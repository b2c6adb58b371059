"""The pytest plugin promissory installs (entry point ``pytest11``): fixtures for your tests.

* ``promissory_server_dsn`` (session): ``$PROMISSORY_TEST_DSN``, or an embedded server in a
  temporary directory, stopped after the session.
* ``promissory_dsn``: a fresh, empty schema on that server (``fresh_schema``), dropped after
  the test.
* ``runtime``: a ``Runtime`` open on that schema.
* ``crash_test``: ``crash_test(scenario, random_kills=10, check_idempotency=(...))`` runs the
  full crash suite on a module-level scenario function and returns its report (see
  ``promissory.testing.CrashSuite``).

Example:
    >>> def test_my_agent_survives_crashes(crash_test):  # doctest: +SKIP
    ...     report = crash_test(scenarios.refund_flow, random_kills=10)
    ...     assert report.boundaries > 0

"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..runtime import Runtime
from ..store import EmbeddedServer
from ._schemas import fresh_schema
from ._suite import CrashReport, CrashSuite


@pytest.fixture(scope="session")
def promissory_server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL the tests use: ``$PROMISSORY_TEST_DSN``, else an embedded server."""
    dsn = os.environ.get("PROMISSORY_TEST_DSN")
    if dsn:
        yield dsn
        return
    server = EmbeddedServer.at(Path(tmp_path_factory.mktemp("promissory-pg")) / "pgdata")
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def promissory_dsn(promissory_server_dsn: str) -> Iterator[str]:
    """A DSN on a fresh, empty schema of its own, dropped after the test."""
    with fresh_schema(promissory_server_dsn) as dsn:
        yield dsn


@pytest.fixture
def runtime(promissory_dsn: str) -> Iterator[Runtime]:
    """A ``Runtime`` open on the test's own schema."""
    rt = Runtime(promissory_dsn).open()
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def crash_test(promissory_dsn: str, tmp_path: Path) -> Callable[..., CrashReport]:
    """Run the crash suite on a scenario: ``crash_test(scenario, **options)``."""

    def run(scenario: str | Callable[..., Any], **options: Any) -> CrashReport:
        return CrashSuite(promissory_dsn, scenario, workdir=tmp_path, **options).run()

    return run
