"""The web view of a store: ``promissory ui``. Needs the ``ui`` extra (Starlette, uvicorn).

Server-rendered pages of the supervision forest, runs (transcript, usage, waterfall), promises,
pending approvals and a search, updated live from the store's notifications; actions (approve,
reject, cancel, resume) behind a token and a CSRF guard.

Example:
    >>> from promissory.ui import create_app  # doctest: +SKIP
    >>> app = create_app(store, token="s3cret")  # doctest: +SKIP

"""

from .._listening import is_loopback as is_loopback
from ..errors import ServeError
from ._app import create_app
from ._server import serve

__all__ = ["ServeError", "create_app", "serve"]

__internal__ = ["is_loopback"]
"""Names the command line imports from here that are not in ``__all__``."""
