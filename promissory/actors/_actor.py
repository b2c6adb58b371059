"""``DurableActor``: an actor on pykka whose mailbox is durable and whose steps are journaled.

A user subclasses ``DurableActor[State]`` (``State`` a msgspec Struct, or omit it for a
stateless actor) and marks handlers with ``@handler``; each handler takes the ``Context`` and
one message, whose type (from the annotation) selects it. The state is kept in the actor's row
after every message, in the same transaction as the reply.

Each instance is one *activation*: a pykka ThreadingActor that the runtime starts when the
actor has work and stops when it is idle or suspended, so a waiting actor holds no thread.
``on_start`` and ``on_stop`` therefore run once per activation, not once per actor.

Example:
    >>> class Count(msgspec.Struct):
    ...     n: int = 0
    >>> class Add(msgspec.Struct):
    ...     by: int
    >>> class Counter(DurableActor[Count]):
    ...     @handler
    ...     def add(self, ctx: Context, msg: Add) -> int:
    ...         self.state = Count(self.state.n + msg.by)
    ...         return self.state.n

"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

import pykka

from ..errors import InvalidInputError, PromissoryError
from ..store import Promise
from ._activation import Activation, Binding

S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["DurableActor", "handler"]

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


_binding = threading.local()


class DurableActor(pykka.ThreadingActor, Generic[S]):
    """The base class of durable actors: typed state, typed handlers, a durable mailbox.

    Attributes:
        state: the actor's state, restored from its last snapshot at every activation.
        id: the actor's id.
        reply_errors: exception types that reject only the message being handled (its
            caller gets the error; state changes are dropped and the actor carries on).
            Any other exception from a handler is a crash, for the supervisor to handle.

    """

    use_daemon_thread = True
    reply_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    state_type: ClassVar[Any] = None
    handlers: ClassVar[dict[str, HandlerSpec]] = {}

    state: S

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = _state_type_of(cls)
        if found is not None:
            cls.state_type = found
        table: dict[str, HandlerSpec] = {}
        for base in reversed(cls.__mro__):
            table.update(base.__dict__.get("_own_handlers", {}))
        own: dict[str, HandlerSpec] = {}
        for name, fn in cls.__dict__.items():
            if callable(fn) and getattr(fn, _HANDLER_MARK, False):
                message_type = _message_type_of(cls, fn)
                key = _type_key(message_type)
                if key in own:
                    raise TypeError(
                        f"{cls.__qualname__} has two handlers for {key}: "
                        f"{own[key].method} and {name}"
                    )
                own[key] = HandlerSpec(name, message_type)
        cls._own_handlers = own  # type: ignore[attr-defined]
        table.update(own)
        cls.handlers = table

    def __init__(self) -> None:
        super().__init__()
        binding: Binding | None = getattr(_binding, "current", None)
        if binding is None:
            raise TypeError(
                f"{type(self).__qualname__} is started by a Runtime (rt.spawn), not directly"
            )
        self.id: str = binding.actor_id
        self._activation = Activation(self, binding)
        _binding.created = self._activation

    @classmethod
    def kind(cls) -> str:
        """The name the actor's class is stored under: ``module:QualName``."""
        return f"{cls.__module__}:{cls.__qualname__}"

    def on_receive(self, message: Any) -> Any:
        """Handle the runtime's commands to this activation (not user messages)."""
        return self._activation.receive(message)

    def on_failure(self, *exc_info: Any) -> None:
        """Report an activation that died outside a handler (a bug in promissory)."""
        self._activation.died()

    def initial_state(self) -> S | None:
        """The state of a new actor when ``spawn`` gives none: ``state_type()`` if possible."""
        state_type = type(self).state_type
        if state_type is None:
            return None
        try:
            return typing.cast(S, state_type())
        except TypeError:
            return None


def start_activation(
    actor_class: type[DurableActor[Any]], binding: Binding
) -> tuple[pykka.ActorRef[Any], Activation]:
    """Start one activation of ``actor_class`` on its own thread."""
    _binding.current = binding
    try:
        ref = actor_class.start()
        activation: Activation = _binding.created
        return ref, activation
    finally:
        _binding.current = None
        _binding.created = None


def check_state(actor_class: type[DurableActor[Any]], state: Any) -> None:
    """Refuse an initial ``state`` that does not fit the actor's state type.

    Raises:
        InvalidInputError: it does not encode, or does not decode as ``state_type``.

    """
    if state is None or actor_class.state_type is None:
        return
    from ..store import decode, encode

    try:
        decode(encode(state, what="state").encode(), actor_class.state_type)
    except PromissoryError as exc:
        raise InvalidInputError(
            f"the state given to {actor_class.__qualname__} does not fit its state type "
            f"{getattr(actor_class.state_type, '__name__', actor_class.state_type)}: {exc}"
        ) from exc


def handler_for(actor_class: type[DurableActor[Any]], message: Promise) -> HandlerSpec | None:
    """The handler of ``actor_class`` for a stored message, by its type tag."""
    from ._messages import TYPE_TAG

    name = message.tags.get(TYPE_TAG)
    return actor_class.handlers.get(name) if name is not None else None


def _state_type_of(cls: type) -> Any:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, DurableActor):
            args = typing.get_args(base)
            if args and not isinstance(args[0], TypeVar):
                return args[0]
    return None


def _message_type_of(cls: type, fn: Callable[..., Any]) -> Any:
    import inspect

    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 3:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__} must take (self, ctx, msg), "
            f"not {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise TypeError(
            f"cannot read the annotations of {cls.__qualname__}.{fn.__name__}: {exc}"
        ) from exc
    message_type = hints.get(params[2].name)
    if message_type is None:
        raise TypeError(
            f"handler {cls.__qualname__}.{fn.__name__} must annotate its message parameter "
            f"{params[2].name!r} with the message type"
        )
    return message_type


def _type_key(message_type: Any) -> str:
    origin = typing.get_origin(message_type) or message_type
    return getattr(origin, "__name__", None) or repr(message_type)
