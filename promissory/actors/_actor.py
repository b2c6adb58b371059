"""``DurableActor``: an actor on pykka whose mailbox is durable and whose steps are journaled.

A user subclasses ``DurableActor[State]`` (``State`` a msgspec Struct, or omit it for a
stateless actor) and marks handlers with ``@handler``; each handler takes the ``Context`` and
one message, whose type (from the annotation) selects it. The state is kept in the actor's row
after every message, in the same transaction as the reply.

Each instance is one *activation*: a pykka ThreadingActor that the runtime starts when the
actor has work and stops when it is idle or suspended, so a waiting actor holds no thread.
``on_start`` and ``on_stop`` therefore run once per activation, not once per actor (and an
activation started while a send that would claim the actor commits, when that claim does not
hold, ends without handling anything).

A class is kept under a stable type name (``kind()``): ``module:QualName``, or the one it gives
with ``name=``, which a class defined in a script needs
(``class Counter(DurableActor[Count], name="billing.counter")``). A node hosts the types its
process has defined (see ``_types``).

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

import functools
import queue
import threading
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pykka

from ..errors import ActorBuildError, InvalidDefinitionError
from ._activation import Activation, Binding
from ._handlers import HandlerSpec, handler, handlers_of
from ._types import register_type

if TYPE_CHECKING:
    from pykka._actor import ActorInbox  # pykka's protocol for an inbox (not exported)

S = TypeVar("S")

__all__ = ["DurableActor", "handler"]


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
    supervises: ClassVar[bool] = False
    """Whether this is a ``Supervisor`` (kept in the actor's row: its children's exits go to
    it, on whichever node handles them)."""
    reply_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    state_type: ClassVar[Any] = None
    handlers: ClassVar[dict[str, HandlerSpec]] = {}

    state: S

    type_name: ClassVar[str] = ""
    """The stable name actors of this class are kept under (``kind``): ``module:QualName``,
    or the ``name=`` given in the class statement."""

    former_kinds: ClassVar[tuple[str, ...]] = ()
    """Names actors of this class were kept under before a rename: a journal's spawn step that
    holds one of them still replays (a journal kept by the earlier version stays valid)."""

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = name if name is not None else f"{cls.__module__}:{cls.__qualname__}"
        register_type(cls.type_name, cls)
        found = _state_type_of(cls)
        if found is not None:
            cls.state_type = found
        table: dict[str, HandlerSpec] = {}
        for base in reversed(cls.__mro__):
            table.update(base.__dict__.get("_own_handlers", {}))
        own = handlers_of(cls, dict(cls.__dict__))
        cls._own_handlers = own  # type: ignore[attr-defined]
        table.update(own)
        cls.handlers = table
        on_start = cls.__dict__.get("on_start")
        if on_start is not None and not getattr(on_start, _GUARDED, False):
            cls.on_start = _guard_on_start(on_start)  # type: ignore[method-assign,assignment]

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        # pykka's ``queue.Queue`` wakes the activation through a condition variable; C's
        # ``SimpleQueue`` through one lock (every message and command reaches an activation
        # this way): 27 against 34 µs of CPU per hand-off between two threads, measured.
        return queue.SimpleQueue()

    def __init__(self) -> None:
        super().__init__()
        binding: Binding | None = getattr(_binding, "current", None)
        if binding is None:
            raise InvalidDefinitionError(
                f"{type(self).__qualname__} is started by a Runtime (rt.spawn), not directly"
            )
        self.id: str = binding.actor_id
        self._activation = Activation(self, binding)
        _binding.created = self._activation
        if binding.first is not None:
            self.actor_ref.tell(binding.first)  # before the thread starts: no wake-up

    @classmethod
    def kind(cls) -> str:
        """The name the actor's class is stored under (see ``type_name``)."""
        return cls.type_name or f"{cls.__module__}:{cls.__qualname__}"

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


_GUARDED = "__promissory_guarded__"


def _guard_on_start(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """``fn`` (a class's own ``on_start``), its failure kept for the activation to report.

    pykka logs an exception from ``on_start`` and stops the actor, which would leave the
    runtime poking a dead thread; kept instead, it becomes the activation's crash, for
    supervision to decide on, like a handler's. A subclass's ``super().on_start()`` runs the
    base's unguarded, so the failure stops the whole chain.
    """

    @functools.wraps(fn)
    def on_start(self: Any) -> None:
        activation: Activation | None = getattr(self, "_activation", None)
        if activation is None or activation.starting:
            fn(self)
            return
        activation.starting = True
        try:
            fn(self)
        except Exception as exc:
            activation.build_error = exc
        finally:
            activation.starting = False

    setattr(on_start, _GUARDED, True)
    return on_start


def start_activation(
    actor_class: type[DurableActor[Any]], binding: Binding
) -> tuple[pykka.ActorRef[Any], Activation]:
    """Start one activation of ``actor_class`` on its own thread.

    Raises:
        ActorBuildError: the class's ``__init__`` raised (its exception is the ``__cause__``).

    """
    _binding.current = binding
    try:
        try:
            ref = actor_class.start()
        except Exception as exc:
            raise ActorBuildError(
                f"{actor_class.__qualname__}() raised {type(exc).__name__}: {exc}"
            ) from exc
        activation: Activation = _binding.created
        return ref, activation
    finally:
        _binding.current = None
        _binding.created = None


def _state_type_of(cls: type) -> Any:
    for base in getattr(cls, "__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, DurableActor):
            args = typing.get_args(base)
            if args and not isinstance(args[0], TypeVar):
                return args[0]
    return None
