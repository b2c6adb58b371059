"""The embedded PostgreSQL a user gets with no database configured, and choosing the DSN.

With no DSN given and no ``PROMISSORY_DSN`` set, promissory runs a PostgreSQL server from the
binaries the ``pgserver`` wheel ships, with its data in ``$PROMISSORY_HOME/pgdata``
(``~/.promissory/pgdata`` by default). The server outlives the Python process (it is a separate
process, listening on a Unix socket in or near the data directory), so the next start reuses
it; if it is not running it is started, and PostgreSQL's own crash recovery makes the data
whole after any kill. ``stop_embedded`` (``promissory stop``) stops it.

Run as root, pgserver runs PostgreSQL as an unprivileged user and opens every directory above
the data directory to group and others so that user can reach it; the modes of those
directories are put back as they were once the server is up (it works in its data directory
by relative paths), and opened again only while pgserver runs a command on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
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
        try:
            # Created private: it holds a database.
            self.data_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.data_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot keep the embedded server's data in {self.data_dir} "
                f"({exc.strerror or exc}); set PROMISSORY_HOME to a directory you can write, "
                "or PROMISSORY_DSN to a database"
            ) from None
        _forget_dead_postmaster(self.data_dir)
        try:
            # pgserver's first start opens the way to the data itself; a start again (the
            # server was stopped) runs pg_ctl as the server's user at once.
            with parent_modes_kept(self.data_dir, opened_for=_server_user()):
                if self._server is None:
                    self._server = PostgresServer(self.data_dir, cleanup_mode=None)
                else:
                    with PostgresServer._lock:
                        self._server.ensure_postgres_running()  # type: ignore[attr-defined]
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise StoreUnavailableError(
                f"could not start the embedded PostgreSQL in {self.data_dir}: {exc}; "
                f"its log is {self.data_dir / 'log'}"
            ) from exc
        except Exception as exc:  # pgserver's own checks (OSError, AssertionError, …)
            raise StoreUnavailableError(
                f"could not start the embedded PostgreSQL in {self.data_dir}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def stop(self) -> None:
        """Stop the server (a fast shutdown: open connections are closed)."""
        stop_embedded(self.data_dir)

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


def stop_embedded(data_dir: Path | None = None) -> bool:
    """Stop the embedded server whose data is in ``data_dir`` (default: ``home()/pgdata``).

    A fast shutdown: open connections are closed; the data stays. Returns whether a server
    was running there (nothing is started to find out).

    Example:
        >>> stop_embedded()  # doctest: +SKIP
        True

    Raises:
        StoreUnavailableError: the server would not stop.

    """
    data_dir = (data_dir or home() / "pgdata").expanduser().resolve()
    _forget_dead_postmaster(data_dir)
    if not _postmaster_running(data_dir):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]
    user = _server_user()
    try:
        with parent_modes_kept(data_dir, opened_for=user):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user)
    except (subprocess.CalledProcessError, OSError) as exc:
        _forget_dead_postmaster(data_dir)
        if not _postmaster_running(data_dir):
            _restore_modes(data_dir)
            return True  # it stopped meanwhile (the process that started it ended it)
        raise StoreUnavailableError(
            f"could not stop the embedded PostgreSQL in {data_dir}: {exc}"
        ) from exc
    _restore_modes(data_dir)
    return True


def _ledger(data_dir: Path) -> Path:
    return data_dir.parent / "parent-modes.json"


def _note_modes(data_dir: Path, modes: dict[Path, int]) -> None:
    """Note the modes of the directories above ``data_dir`` before the server's search bit
    was added (the first note of each directory stays: it is the user's own mode).
    """
    ledger = _ledger(data_dir)
    try:
        noted = json.loads(ledger.read_text()) if ledger.exists() else {}
        for d, mode in modes.items():
            noted.setdefault(str(d), mode)
        if noted:
            ledger.write_text(json.dumps(noted))
    except (OSError, ValueError) as exc:
        log.debug("could not note the modes above %s: %s", data_dir, exc)


def _restore_modes(data_dir: Path) -> None:
    """Put back the modes noted by ``_note_modes``, now that the server has stopped (a
    directory whose mode was changed since by someone else is left as it is).
    """
    ledger = _ledger(data_dir)
    try:
        noted = json.loads(ledger.read_text()) if ledger.exists() else {}
    except (OSError, ValueError):
        return
    needed = _binary_dirs()
    for name, mode in noted.items():
        d = Path(name)
        if d in needed:
            continue
        with contextlib.suppress(OSError):
            if d.stat().st_mode & 0o7777 == mode | 0o011:
                _chmod(d, mode)
    with contextlib.suppress(OSError):
        ledger.unlink()


def _postmaster_running(data_dir: Path) -> bool:
    import psutil  # type: ignore[import-untyped]  # pgserver depends on it

    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        return bool(psutil.pid_exists(pid))
    except (OSError, ValueError, IndexError):
        return False


def _server_user() -> str | None:
    """The user pgserver runs PostgreSQL and its commands as: its own, when run as root."""
    return "pgserver" if os.name == "posix" and os.geteuid() == 0 else None


@contextlib.contextmanager
def parent_modes_kept(path: Path, *, opened_for: str | None = None) -> Iterator[None]:
    """Put back, on leaving, the modes of every directory above ``path``, but for the search
    bit the server's own user needs.

    pgserver run as root opens them all to group and others (read and search) so that the
    server's own user can reach its data. Read is not needed, and is taken back: nobody else
    can list a ``drwx------`` home. Search is: PostgreSQL reaches its data by absolute paths
    as it runs (a checkpoint reads ``global/pg_control`` so, and a server whose data became
    unreachable panics at its next checkpoint), so with ``opened_for`` (the server's user,
    not the owner, in root's group) every directory above ``path`` keeps search for group
    and others (``go+x``).
    Directories above pgserver's own binaries keep the search bit it adds too: the server
    loads its libraries from there as it runs. The modes the search bit was added to are
    noted beside the data (``parent-modes.json``), and ``stop_embedded`` puts them back once
    the server has stopped.
    """
    if os.name != "posix" or os.geteuid() != 0:
        yield
        return
    before: dict[Path, int] = {}
    for d in path.parents:
        try:
            before[d] = d.stat().st_mode & 0o7777
        except OSError:
            continue
    needed = _binary_dirs()
    # The server runs as its own user with root's group: search for group and others.
    reach = 0o011 if opened_for is not None else 0
    try:
        if opened_for is not None:
            for d, mode in before.items():
                _chmod(d, mode | 0o011)
        yield
    finally:
        if reach:
            _note_modes(path, {d: m for d, m in before.items() if m & reach != reach})
        for d, mode in before.items():
            keep = 0o011 if d in needed else 0
            mode |= reach
            try:
                now = d.stat().st_mode & 0o7777
            except OSError:
                continue
            if now != (mode | (now & keep)):
                _chmod(d, mode | (now & keep))


def _binary_dirs() -> set[Path]:
    try:
        import pgserver

        bin_dir = Path(pgserver.__file__).resolve().parent / "pginstall" / "bin"
    except Exception:
        return set()
    return {bin_dir, *bin_dir.parents}


def _chmod(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError as exc:
        log.warning("could not set the mode of %s back to %o: %s", path, mode, exc)


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
    import psutil  # pgserver depends on it

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
