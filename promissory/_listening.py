"""Listening sockets for the HTTP servers (``promissory ui`` and ``promissory serve``): which
hosts are loopback, and a socket bound before the server starts (so its URL answers at once).
"""

from __future__ import annotations

import ipaddress
import socket

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
