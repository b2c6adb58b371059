"""Ids the runtime chooses: message ids that sort by time, and step ids under a message.

A step's id is its message's id and its position among the handler's durable operations,
``{message id}/{n}`` counting from 1, so a replay that asks for the same operations in the
same order finds the same ids.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_message_id(actor_id: str) -> str:
    """A fresh message id under ``actor_id``: time-ordered, then random (``{actor}/m-…``)."""
    stamp = _base36(time.time_ns() // 1000, 11)
    noise = _base36(int.from_bytes(os.urandom(5), "big"), 8)
    return f"{actor_id}/m-{stamp}{noise}"


def step_id(message_id: str, position: int) -> str:
    """The id of the durable operation at ``position`` (1-based) while handling ``message_id``."""
    return f"{message_id}/{position}"
