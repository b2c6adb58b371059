"""The ``promissory`` command line."""

from . import _actions as actions  # noqa: F401  (an internal name, below)
from ._inspect import (
    ACTOR_STATUSES as ACTOR_STATUSES,
    MAX_LIMIT as MAX_LIMIT,
    load_actor as load_actor,
)
from ._main import build_parser, main
from ._serve import load_target as load_target

__all__ = ["build_parser", "main"]

__internal__ = ["ACTOR_STATUSES", "MAX_LIMIT", "actions", "load_actor", "load_target"]
"""Names the web view (``promissory.ui``) imports from here that are not in ``__all__``:
the actions it shares with the CLI (settle, cancel, resume), and the inspection helpers."""
