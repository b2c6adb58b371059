"""Ids the runtime chooses: message ids that sort by time, and step ids under a message.

A step's id is its message's id and its position among the handler's durable operations,
``{message id}/{n}`` counting from 1, so a replay that asks for the same operations in the
same order finds the same ids.
"""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"

_NOISE = 5
"""Bytes of randomness in a message id (40 bits, 8 base-36 digits)."""
_REFILL = 4095
"""Bytes a thread reads from the operating system at a time (819 ids' worth)."""


class _Noise(threading.local):
    """Random bytes read ahead, one buffer per thread (no lock: a thread takes from its own).

    ``os.urandom`` per id let the GIL go on every message sent, and with many threads at work
    the sender then waited its turn to get it back: with W5's eight senders, reading ahead cut
    the process's thread switches from 11.8 to 9.75 a message (BENCHMARKS.md, "The message
    path", fourteenth pass).
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.at = 0


_noise = _Noise()


def _forget_noise() -> None:
    # A forked child must not hand out the bytes its parent has handed out or will.
    global _noise
    _noise = _Noise()


os.register_at_fork(after_in_child=_forget_noise)


def _random40() -> int:
    noise = _noise
    at = noise.at
    if at + _NOISE > len(noise.buffer):
        noise.buffer = os.urandom(_REFILL)
        at = 0
    noise.at = at + _NOISE
    return int.from_bytes(noise.buffer[at : at + _NOISE], "big")


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_message_id(actor_id: str) -> str:
    """A fresh message id under ``actor_id``: time-ordered, then random (``{actor}/m-…``)."""
    stamp = _base36(time.time_ns() // 1000, 11)
    noise = _base36(_random40(), 8)
    return f"{actor_id}/m-{stamp}{noise}"


def step_id(message_id: str, position: int) -> str:
    """The id of the durable operation at ``position`` (1-based) while handling ``message_id``."""
    return f"{message_id}/{position}"
