"""Listening sockets for the HTTP servers (``promissory ui`` and ``promissory serve``): which
hosts are loopback, a socket bound before the server starts (so its URL answers at once), the
URL it answers on, and the uvicorn server both run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

from .errors import ServeError


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0")
        (True, False)

    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int, *, backlog: int = 128, inheritable: bool = False) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port).

    Raises:
        ServeError: the address cannot be bound (the port is taken, the host is not ours).

    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(backlog)
    sock.set_inheritable(inheritable)
    return sock


def url_of(host: str, port: int) -> str:
    """The URL of a server listening on ``host``:``port`` (an IPv6 host in brackets).

    Example:
        >>> url_of("::1", 8080)
        'http://[::1]:8080'

    """
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}"


def http_server(app: Any, *, foreground: bool = True, graceful: int = 1) -> Any:
    """A uvicorn server for ``app`` on uvloop. In the foreground (on the main thread)
    SIGINT and SIGTERM stop it and ``run`` returns, so the command exits 0 (uvicorn would
    raise the signal again once it had stopped); ``graceful``: seconds open requests get.
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if not foreground or threading.current_thread() is not threading.main_thread():
                yield
                return

            def stop(signum: int, frame: Any) -> None:
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="h11",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful,
    )
    return Server(config)
