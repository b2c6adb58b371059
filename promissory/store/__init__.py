"""The durable promise store: Postgres schema, promise state machine, group commit, events.

This layer knows nothing of actors' code or agents: it keeps promises and actor rows and says
when they change. See ``Store`` for the promise operations.
"""

from ._codec import decode, encode, error_info, rebuild_error
from ._embedded import EmbeddedServer, home, resolve_dsn
from ._events import Subscription
from ._records import ActorCancel, ErrorInfo, Outcome, Page, Promise, PromiseKind, PromiseState
from ._schema import LATEST as SCHEMA_VERSION
from ._store import Store
from ._validate import Timeout

__all__ = [
    "ActorCancel",
    "SCHEMA_VERSION",
    "EmbeddedServer",
    "ErrorInfo",
    "Outcome",
    "Page",
    "Promise",
    "PromiseKind",
    "PromiseState",
    "Store",
    "Subscription",
    "Timeout",
    "decode",
    "encode",
    "error_info",
    "home",
    "rebuild_error",
    "resolve_dsn",
]
