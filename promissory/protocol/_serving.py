"""Serving the protocol with uvicorn on uvloop: in the foreground (``promissory serve``) or in
a thread of its own (``ProtocolServer``, what ``Runtime(serve=...)`` embeds).

The socket is bound before anything else, so the URL told answers at once. Loopback addresses
may serve without a token; any other address needs one (``--token``, or the environment
variable ``PROMISSORY_SERVE_TOKEN``): anyone who reaches the port could settle every promise.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from .._listening import bind, http_server, is_loopback, url_of
from ..errors import ServeError
from ..store import Store
from ._web import create_app

DEFAULT_PORT = 8001
"""The port Resonate's SDKs and CLI use by default."""
TOKEN_ENV = "PROMISSORY_SERVE_TOKEN"
"""The environment variable a token is read from when none is given."""


def check_address(host: str, token: str | None) -> str | None:
    """The token to require on ``host`` (the given one, else ``$PROMISSORY_SERVE_TOKEN``).

    Raises:
        ServeError: ``host`` is not a loopback address and there is no token.

    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ServeError(
            f"refusing to serve the protocol on {host}, which is not a loopback address, "
            f"without a token: anyone who reaches it could settle every promise (give --token "
            f"or set {TOKEN_ENV})"
        )
    return token


class ProtocolServer:
    """The durable-promise protocol served from a thread of this process.

    Args:
        dsn: the database (``None``: the runtime's, when a ``Runtime`` starts it).
        host: the address to listen on (loopback by default).
        port: the port (0: a free one).
        token: the bearer token to require; by default ``$PROMISSORY_SERVE_TOKEN``, and
            required for a non-loopback ``host``.
        max_streams: the most poll streams this node holds at once (each a worker's open
            connection); one more is answered 503, and the worker tries again or another node.

    Example:
        >>> with Runtime(serve=ProtocolServer(port=8001)) as rt:  # doctest: +SKIP
        ...     print(rt.protocol_url)
        http://127.0.0.1:8001

    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        max_streams: int = 1000,
    ) -> None:
        self.dsn = dsn
        self.max_streams = max_streams
        self.host = host
        self.port = port
        self.token = check_address(host, token)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        """Where it answers, once started."""
        return url_of(self.host, self.port)

    def start(self, dsn: str | None = None, timeout: float = 30.0) -> ProtocolServer:
        """Bind, start serving in a thread, and return once it answers.

        Raises:
            ServeError: the address cannot be bound, or the server did not start in time.

        """
        dsn = dsn or self.dsn
        if dsn is None:
            raise ServeError("ProtocolServer needs a DSN")
        self._sock = bind(self.host, self.port, backlog=1024)
        self.port = self._sock.getsockname()[1]
        self._server = http_server(
            create_app(dsn, token=self.token, max_streams=self.max_streams), foreground=False
        )
        sock = self._sock
        self._thread = threading.Thread(
            target=lambda: self._server.run(sockets=[sock]),
            name="promissory-protocol",
            daemon=True,
        )
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            self.stop()
            raise ServeError(f"the protocol server on {self.url} did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (poll streams end) and wait for the thread. Idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ProtocolServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    max_streams: int = 1000,
    say: Callable[[str], None] | None = None,
) -> int:
    """Serve the protocol on the store at ``dsn`` until SIGINT or SIGTERM; return 0.

    Raises:
        ServeError: a non-loopback host without a token, or an address that cannot be bound.

    Example:
        >>> serve("postgresql://localhost/app", port=8001)  # doctest: +SKIP
        promissory serve: http://127.0.0.1:8001 (Ctrl-C stops it)

    """
    token = check_address(host, token)
    sock = bind(host, port, backlog=1024)
    port = sock.getsockname()[1]
    try:
        Store(dsn).close()  # the schema up to date before the URL is told
        app = create_app(dsn, token=token, migrate=False, max_streams=max_streams)
        server = http_server(app, foreground=True)
        url = url_of(host, port)
        if say is not None:
            say(url)
        else:
            print(f"promissory serve: {url} (Ctrl-C stops it)", flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
