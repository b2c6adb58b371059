"""The embedded PostgreSQL a user gets with no database configured, and choosing the DSN.

With no DSN given and no ``PROMISSORY_DSN`` set, promissory runs a PostgreSQL server from the
binaries the ``pgserver`` wheel ships, with its data in ``$PROMISSORY_HOME/pgdata``
(``~/.promissory/pgdata`` by default). The server outlives the Python process (it is a separate
process, listening on a Unix socket in or near the data directory), so the next start reuses
it; if it is not running it is started, and PostgreSQL's own crash recovery makes the data
whole after any kill.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from ..errors import StoreUnavailableError

log = logging.getLogger("promissory.store")

_lock = threading.Lock()
_servers: dict[Path, EmbeddedServer] = {}


def home() -> Path:
    """Where promissory keeps local data: ``$PROMISSORY_HOME``, else ``~/.promissory``."""
    configured = os.environ.get("PROMISSORY_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".promissory"


class EmbeddedServer:
    """A PostgreSQL server whose data lives in ``data_dir``, started on demand and left running.

    Example:
        >>> server = EmbeddedServer.at(home() / "pgdata")  # doctest: +SKIP
        >>> server.dsn  # doctest: +SKIP
        'postgresql://postgres:@/postgres?host=/root/.promissory/pgdata'

    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: object | None = None

    @classmethod
    def at(cls, data_dir: Path) -> EmbeddedServer:
        """The server for ``data_dir``, started (or found running) in this process."""
        data_dir = data_dir.expanduser().resolve()
        with _lock:
            server = _servers.get(data_dir)
            if server is None:
                server = _servers[data_dir] = cls(data_dir)
            server.start()
            return server

    def start(self) -> None:
        """Start the server if it is not running; reuse it if it is."""
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
                # fallback it takes is fine for a lock file.
                warnings.simplefilter("ignore")
                from pgserver.postgres_server import PostgresServer
        except ImportError as exc:  # pragma: no cover - pgserver is a dependency
            raise StoreUnavailableError(
                "no database configured and the embedded server (pgserver) is not installed; "
                "set PROMISSORY_DSN or pass dsn="
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        _forget_dead_postmaster(self.data_dir)
        try:
            if self._server is None:
                self._server = PostgresServer(self.data_dir, cleanup_mode=None)
            else:
                with PostgresServer._lock:
                    self._server.ensure_postgres_running()  # type: ignore[attr-defined]
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            raise StoreUnavailableError(
                f"could not start the embedded PostgreSQL in {self.data_dir}: {exc}; "
                f"its log is {self.data_dir / 'log'}"
            ) from exc

    def stop(self) -> None:
        """Stop the server (a fast shutdown: open connections are closed)."""
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        server = self._server
        user = getattr(server, "system_user", None)
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user)

    @property
    def dsn(self) -> str:
        """The connection URI of the running server."""
        if self._server is None:
            self.start()
        return str(self._server.get_uri())  # type: ignore[union-attr]


def resolve_dsn(dsn: str | None = None, *, announce: Callable[[str], None] | None = None) -> str:
    """The DSN to use: ``dsn`` if given, else ``$PROMISSORY_DSN``, else the embedded server's.

    ``announce`` is told where the embedded server keeps its data when it is used.
    """
    if dsn:
        return dsn
    env = os.environ.get("PROMISSORY_DSN")
    if env:
        return env
    data_dir = home() / "pgdata"
    server = EmbeddedServer.at(data_dir)
    (announce or _announce)(f"promissory: embedded PostgreSQL, data in {server.data_dir}")
    return server.dsn


_announced: set[str] = set()


def _announce(text: str) -> None:
    if text not in _announced:
        _announced.add(text)
        print(text, file=sys.stderr)


def _forget_dead_postmaster(data_dir: Path) -> None:
    """Remove the lock file of a postmaster that died and was not reaped.

    Killed (SIGKILL, OOM), a postmaster whose parent was PID 1 stays a zombie where PID 1 does
    not reap orphans (a container running ``python`` as its first process). A zombie's pid
    still looks alive to ``pg_ctl`` and pgserver, which would then neither start a server nor
    find one listening. A zombie holds nothing, so its lock files can go.
    """
    import psutil  # type: ignore[import-untyped]  # pgserver depends on it

    lock = data_dir / "postmaster.pid"
    try:
        # postmaster.pid: pid, data dir, start time, port, socket dir, ...
        lines = lock.read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), lines[3].strip(), lines[4].strip()
        dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except (OSError, ValueError, IndexError, psutil.Error):
        return  # no lock file, or its process is gone (pgserver handles that), or alive
    if dead:
        # The socket's lock file names the same pid, and the new server would refuse it too.
        if socket_dir:
            (Path(socket_dir) / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
