"""A DSN through a transaction-mode pooler (where a session's advisory lock and LISTEN do not
stay with the client) is refused when the runtime opens, with what to use instead; a
session-mode pool works (issue 16)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from promissory.errors import StoreError
from promissory.store import lock_connection

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pooled(dsn: str, tmp_path: Path, mode: str) -> Iterator[str]:
    if str(conninfo_to_dict(dsn).get("host") or "/").startswith("/") and _root():
        # The embedded server listens only on a socket in pytest's private (0700) temp
        # directory, which the unprivileged user pgbouncer drops to cannot reach.
        pytest.skip(
            "pgbouncer (run as root, it drops to user postgres) cannot reach the embedded "
            "server's socket; set PROMISSORY_TEST_DSN to a TCP server, as .ci/run does"
        )
    # Its own directory, open to the unprivileged user pgbouncer drops to when run as root.
    tmp_path = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    tmp_path.chmod(0o777)
    params = conninfo_to_dict(dsn)
    port = free_port()
    ini = tmp_path / f"pgbouncer-{mode}.ini"
    users = tmp_path / "users.txt"
    users.write_text(f'"{params.get("user", "postgres")}" ""\n')
    ini.write_text(
        "[databases]\n"
        f"* = host={params.get('host', '127.0.0.1')} port={params.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = trust\nauth_file = {users}\n"
        f"pool_mode = {mode}\nmax_client_conn = 100\ndefault_pool_size = 4\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {tmp_path / f'pgbouncer-{mode}.log'}\n"
        f"pidfile = {tmp_path / f'pgbouncer-{mode}.pid'}\n"
    )
    proc = subprocess.Popen(
        [PGBOUNCER, "-u", "postgres", str(ini)] if _root() else [PGBOUNCER, str(ini)]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "pgbouncer did not start"
                time.sleep(0.05)
        via = {k: v for k, v in params.items() if v is not None and k != "options"}
        via.update(host="127.0.0.1", port=str(port))
        yield make_conninfo("", **via)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _root() -> bool:
    import os

    return os.geteuid() == 0


needs_pgbouncer = pytest.mark.skipif(
    not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed (.ci/run installs it)"
)


@needs_pgbouncer
@pytest.mark.timeout(60)
def test_a_transaction_mode_pooler_is_refused_with_what_to_use_instead(
    server_dsn: str, tmp_path: Path
) -> None:
    for dsn in pooled(server_dsn, tmp_path, "transaction"):
        with pytest.raises(StoreError, match="transaction mode.*session-mode pool"):
            lock_connection(dsn, "pooler-probe", 5).close()


@needs_pgbouncer
@pytest.mark.timeout(60)
def test_a_session_mode_pool_is_accepted(server_dsn: str, tmp_path: Path) -> None:
    for dsn in pooled(server_dsn, tmp_path, "session"):
        lock_connection(dsn, "pooler-probe-session", 5).close()
