"""Messages as stored: the JSON of the message in ``param``, its type's name in a tag.

A message's ``param`` is the message itself, encoded by msgspec, so it reads plainly in SQL;
the name of its type goes to the tag ``promissory:type`` so the recipient can decode it to the
type its handler takes.
"""

from __future__ import annotations

from typing import Any

from .. import _tracing
from ..store import encode

TYPE_TAG = "promissory:type"
"""The tag holding a message's type name."""


def type_name(msg: Any) -> str:
    """The name a message's type is known by in handler tables: the class's ``__name__``."""
    return type(msg).__name__ if msg is not None else "NoneType"


def message_tags(msg: Any, tags: dict[str, str] | None = None) -> dict[str, str]:
    """The tags a message is stored with: the caller's, plus its type name (and, while
    tracing is on, the trace context it was sent in).
    """
    out = dict(tags or {})
    out[TYPE_TAG] = type_name(msg)
    _tracing.inject(out)
    return out


def encode_message(msg: Any) -> str:
    """Encode a message as JSON, or raise ``EncodeError`` naming its type (nothing is written)."""
    return encode(msg, what=f"message ({type_name(msg)})")


def start_message(actor_class: type) -> tuple[str, str] | None:
    """The message a new incarnation of ``actor_class`` is sent, encoded with its tags.

    An actor class asks for one with a ``start_message()`` classmethod (supervisors do: it
    starts their children); ``None`` for the rest.
    """
    make = getattr(actor_class, "start_message", None)
    msg = make() if make is not None else None
    if msg is None:
        return None
    return encode_message(msg), encode(message_tags(msg), what="tags")
