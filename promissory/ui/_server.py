"""``promissory ui``: serve the web view with uvicorn, on uvloop, until SIGINT or SIGTERM.

It binds its socket first (so the URL it prints answers at once), on ``127.0.0.1`` by default,
with a random access token in the URL it prints, as Jupyter does. A non-loopback address
without a token is refused: anyone who can reach it could read every stored value and cancel
runs.

Example:
    >>> serve(dsn, port=8765)  # doctest: +SKIP
    promissory ui: http://127.0.0.1:8765/?token=1b8f…  (Ctrl-C stops it)

"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._listening import bind, http_server, is_loopback, url_of
from ..errors import ServeError
from ..store import Store

DEFAULT_PORT = 8765


def new_token() -> str:
    """A fresh random access token."""
    return secrets.token_hex(24)


def serve(
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = "",
    modules: Sequence[str] = (),
    say: Callable[[str, dict[str, Any]], None] | None = None,
    connect_timeout: float = 10.0,
) -> int:
    """Serve the view of the store at ``dsn`` until SIGINT or SIGTERM; return 0.

    Args:
        dsn: the database.
        host: the address to listen on.
        port: the port (0: a free one).
        token: the access token; ``""`` makes a random one; ``None`` serves without one,
            which only a loopback ``host`` may do.
        modules: modules to import first, where agents are defined (to resume their runs).
        say: told the URL when the server listens (default: print it).
        connect_timeout: how long to wait for the database at start.

    Raises:
        ServeError: a non-loopback host without a token, or an address that cannot be bound.

    """
    from ..cli import load_target
    from ..runtime import Runtime
    from ._app import create_app

    loopback = is_loopback(host)
    if token is None and not loopback:
        raise ServeError(
            f"refusing to serve on {host}, which is not a loopback address, without a token: "
            "anyone who reaches it could read the store and cancel runs (drop --no-token)"
        )
    if token == "":
        token = new_token()
    for name in modules:
        load_target(name)
    sock = bind(host, port, inheritable=True)
    port = sock.getsockname()[1]
    store = Store(dsn, reconnect_timeout=connect_timeout, connect_timeout=connect_timeout)
    try:
        app = create_app(
            store,
            token=token,
            runtime=lambda: Runtime(dsn).open(),
            loopback_only=loopback,
        )
        server = http_server(app, graceful=2)
        url = url_of(host, port) + "/" + (f"?token={token}" if token else "")
        if say is not None:
            say(url, {"url": url, "host": host, "port": port})
        else:
            print(f"promissory ui: {url}  (Ctrl-C stops it)", flush=True)
        sys.stdout.flush()
        server.run(sockets=[sock])
    finally:
        sock.close()
        store.close()
    return 0
