"""Checks on input, made before anything reaches the database.

Each check is a pure function that returns the normalised input or raises an
``InvalidInputError`` naming what was wrong, so a rejected call writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InvalidIdError, InvalidInputError, InvalidTagsError

MAX_ID_LENGTH = 1024

_UNFIT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""A character no id may hold (a control character, a lone surrogate): one search per id,
on every send and step, where a loop over its characters cost ten times as much."""

Timeout = float | int | timedelta | datetime | None
"""A timeout: seconds from now, a ``timedelta`` from now, an aware ``datetime``, or ``None``."""


MAX_READ_ID_LENGTH = 2048
"""Reads accept longer ids than writes do: ids the runtime builds under a user's id (steps,
timers, messages of actors with long ids) add a few characters per level."""

MAX_ACTOR_ID_LENGTH = 512
"""An actor's id leaves room for the message and step ids built under it."""


MAX_PAGE = 1_000_000_000
"""The most rows one listing (``Store.search``, ``promissory promises --limit``) returns."""


def check_id(id: Any, *, what: str = "promise id", limit: int = MAX_ID_LENGTH) -> str:
    """Return ``id`` if it is a usable id.

    Raises:
        InvalidIdError: not a string, empty, longer than ``limit`` characters (1024 by
            default), or holding a control character or a lone surrogate.

    """
    if not isinstance(id, str):
        raise InvalidIdError(f"a {what} must be a string, not {type(id).__name__}")
    if not id:
        raise InvalidIdError(f"a {what} must not be empty")
    if len(id) > limit:
        raise InvalidIdError(
            f"a {what} must be at most {limit} characters, not {len(id)}: {id[:40]!r}…"
        )
    if _UNFIT.search(id) is None:
        return id
    for ch in id:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise InvalidIdError(f"a {what} must not hold control characters: {id!r}")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            # A lone surrogate has no UTF-8 form; left in, it would fail only when the driver
            # encodes the id, inside the writer's batch.
            raise InvalidIdError(f"a {what} must be valid Unicode (no lone surrogates): {id!r}")
    return id


def check_tags(tags: Any) -> dict[str, str]:
    """Return ``tags`` as a plain dict of strings.

    Raises:
        InvalidTagsError: not a mapping, or a key or value that is not a string.

    """
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidTagsError(f"tags must be a mapping of strings, not {type(tags).__name__}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTagsError(
                f"tags must map strings to strings; {key!r}: {value!r} is "
                f"{type(key).__name__}: {type(value).__name__}"
            )
        if "\x00" in key or "\x00" in value:
            raise InvalidTagsError(f"tag {key!r} holds a NUL character")
        out[key] = value
    return out


def timeout_parts(timeout: Timeout) -> tuple[float | None, datetime | None]:
    """Split a timeout into (seconds from the database's now, absolute time); one is ``None``.

    Relative timeouts are resolved by the database's clock, never this process's.

    Raises:
        InvalidInputError: a negative or non-finite duration, a naive datetime, or another type.

    """
    if timeout is None:
        return None, None
    if isinstance(timeout, datetime):
        if timeout.tzinfo is None:
            raise InvalidInputError("a timeout datetime must be timezone-aware")
        return None, timeout
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise InvalidInputError(
            f"a timeout must be seconds, a timedelta or a datetime, not {type(timeout).__name__}"
        )
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise InvalidInputError(f"a timeout must be finite, not {seconds}")
    if seconds < 0:
        raise InvalidInputError(f"a timeout must not be negative, not {seconds} seconds")
    try:
        # Checked by the local clock, which is close enough for a bound: the database would
        # otherwise refuse it (interval out of range), or store a time Python cannot read back.
        datetime.now(UTC) + timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidInputError(
            f"a timeout must end before the year 10000, not {seconds} seconds from now"
        ) from None
    return seconds, None
