"""Handlers: the ``@handler`` mark, how a class's handlers are found, and which one a stored
message goes to (by its type tag); checking an initial state against an actor's state type.

Kept apart from ``DurableActor`` so the activation and the handler's context can use them
without importing the actor class (which imports them).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InvalidDefinitionError, InvalidInputError, PromissoryError
from ..store import Promise, decode, encode
from ._messages import TYPE_TAG

F = TypeVar("F", bound=Callable[..., Any])

_HANDLER_MARK = "__promissory_handler__"


def handler(fn: F) -> F:
    """Mark a method ``(self, ctx, msg)`` as the handler for the type of ``msg``.

    The message type comes from the annotation of the third parameter; one handler per type.
    """
    setattr(fn, _HANDLER_MARK, True)
    return fn


class HandlerSpec:
    """A handler: the method's name and the type its messages decode to."""

    __slots__ = ("method", "message_type")

    def __init__(self, method: str, message_type: Any) -> None:
        self.method = method
        self.message_type = message_type


def handlers_of(cls: type, own: dict[str, Any]) -> dict[str, HandlerSpec]:
    """The handlers ``cls`` defines itself (its methods marked ``@handler``), by message type
    key; two for one type is an error.
    """
    table: dict[str, HandlerSpec] = {}
    for name, fn in own.items():
        if callable(fn) and getattr(fn, _HANDLER_MARK, False):
            message_type = _message_type_of(cls, fn)
            key = _type_key(message_type)
            if key in table:
                raise InvalidDefinitionError(
                    f"{cls.__qualname__} has two handlers for {key}: {table[key].method} and {name}"
                )
            table[key] = HandlerSpec(name, message_type)
    return table


def check_state(actor_class: Any, state: Any) -> None:
    """Refuse an initial ``state`` that does not fit the actor's state type.

    Raises:
        InvalidInputError: it does not encode, or does not decode as ``state_type``.

    """
    if state is None or actor_class.state_type is None:
        return

    try:
        decode(encode(state, what="state").encode(), actor_class.state_type)
    except PromissoryError as exc:
        raise InvalidInputError(
            f"the state given to {actor_class.__qualname__} does not fit its state type "
            f"{getattr(actor_class.state_type, '__name__', actor_class.state_type)}: {exc}"
        ) from exc


def handler_for(actor_class: Any, message: Promise) -> HandlerSpec | None:
    """The handler of ``actor_class`` for a stored message, by its type tag."""
    name = message.tags.get(TYPE_TAG)
    return actor_class.handlers.get(name) if name is not None else None


def _message_type_of(cls: type, fn: Callable[..., Any]) -> Any:

    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 3:
        raise InvalidDefinitionError(
            f"handler {cls.__qualname__}.{fn.__name__} must take (self, ctx, msg), "
            f"not {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise InvalidDefinitionError(
            f"cannot read the annotations of {cls.__qualname__}.{fn.__name__}: {exc}"
        ) from exc
    message_type = hints.get(params[2].name)
    if message_type is None:
        raise InvalidDefinitionError(
            f"handler {cls.__qualname__}.{fn.__name__} must annotate its message parameter "
            f"{params[2].name!r} with the message type"
        )
    return message_type


def _type_key(message_type: Any) -> str:
    origin = typing.get_origin(message_type) or message_type
    return getattr(origin, "__name__", None) or repr(message_type)
