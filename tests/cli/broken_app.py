"""A module that fails while it is imported, for ``promissory run tests.cli.broken_app:setup``."""

from __future__ import annotations

RATIO = 1 / 0
