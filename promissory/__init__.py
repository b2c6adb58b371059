"""promissory: a durable actor runtime for AI agents.

Every message an actor receives and every step it takes is a durable promise, a row in
Postgres. The public names are re-exported here.
"""

from . import errors
from .store import (
    ErrorInfo,
    Outcome,
    Page,
    Promise,
    PromiseKind,
    PromiseState,
    Store,
)

__version__ = "0.1.0"

__all__ = [
    "ErrorInfo",
    "Outcome",
    "Page",
    "Promise",
    "PromiseKind",
    "PromiseState",
    "Store",
    "errors",
]
