"""The durable-promise protocol (Resonate's, version 2026-04-01), served over HTTP.

``promissory serve`` (or ``Runtime(serve=...)``) answers ``POST /`` envelopes for every
``promise.*``, ``task.*`` and ``schedule.*`` kind and streams ``execute`` and ``unblock``
messages on ``GET /poll/{group}/{id}``, so workers written with Resonate's SDKs run against a
promissory node on the user's own Postgres. A protocol promise is a row of ``promises``: an
actor can await one a worker made, and a worker one an actor settles.

Example:
    >>> from promissory.protocol import ProtocolServer
    >>> with ProtocolServer("postgresql://localhost/app", port=8001):  # doctest: +SKIP
    ...     ...  # Resonate(url="http://127.0.0.1:8001") workers run against it here

"""

from ._dispatch import KINDS, answer
from ._serving import DEFAULT_PORT, TOKEN_ENV, ProtocolServer, check_address, serve
from ._web import create_app
from ._wire import VERSION

__all__ = [
    "DEFAULT_PORT",
    "KINDS",
    "TOKEN_ENV",
    "VERSION",
    "ProtocolServer",
    "answer",
    "check_address",
    "create_app",
    "serve",
]
