"""What an activation needs from the node that hosts it (implemented by ``runtime``).

The actors layer must not import the runtime, so the runtime hands each activation a ``Host``:
the store, the bridge to the event loop for async steps, and the calls by which an activation
reports that it went idle, suspended, ended or crashed.
"""

from __future__ import annotations

from collections.abc import Coroutine
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..store import ActorRecord, ErrorInfo, Promise, Sent, Store, TakenUp

if TYPE_CHECKING:
    from ._activation import Activation
    from ._ref import ActorRef
    from ._spec import Exit

T = TypeVar("T")


class Host(Protocol):
    """The node an activation runs on."""

    store: Store
    node_id: str
    suspend_after: float
    """Seconds a handler waits in its thread for a pending promise before suspending."""
    parallel: Executor
    """Threads for ``Context.step_many``."""
    cleanup_timeout: float
    """Seconds a canceled handler may keep running durable operations to clean up."""

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the runtime's event loop and block the calling thread for its result."""
        ...

    def start_coroutine(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Start ``coro`` on the runtime's event loop; cancelling the future cancels its task."""
        ...

    def ref(self, actor_id: str) -> ActorRef:
        """A ref that delivers in-process when this node hosts the actor."""
        ...

    def deliver(self, actor_id: str, message: Promise | None) -> None:
        """Hand a committed message to the actor's activation here, starting one if need be."""
        ...

    def sending(self, actor_id: str, claim: bool = False) -> str | None:
        """A message to ``actor_id`` is about to be written here (``sent`` follows).

        With ``claim``, the node id the send may claim the actor for (``send_op(claim=)``),
        when this node holds it with no activation; else ``None``.
        """
        ...

    def sent(self, actor_id: str, sent: Sent | None, mark: int, claim: str | None = None) -> None:
        """Hand a message this process has just written (``send_op``'s result, with the
        store's settle mark from before it; ``None`` when the send failed) to the actor's
        activation, if it is hosted here. ``claim``: what ``sending`` returned for it.
        """
        ...

    def warm(self, actor_id: str) -> None:
        """Start the activation a claiming send is for while that send commits (called
        once its COMMIT is on its way); ``sent`` hands it the message or stops it.
        """
        ...

    def lease_held(self) -> bool:
        """Whether this node still holds its lease (asked before new durable work; may ask
        the database when the node has been silent, after a pause).
        """
        ...

    def home_for(self, kind: str) -> str | None:
        """The id of this node if it hosts ``kind`` (an actor it makes or restarts stays here),
        else ``None`` (the placement gives it to a node that does).
        """
        ...

    def resolve_class(self, kind: str) -> type[Any]:
        """The actor class named ``module:QualName``."""
        ...

    def activation_idle(self, activation: Activation) -> None:
        """The activation's mailbox is empty (it may be passivated)."""
        ...

    def activation_suspended(
        self, activation: Activation, message_id: str, awaiting: list[str], wait_all: bool
    ) -> None:
        """The head message waits on ``awaiting``; the activation ends and frees its thread."""
        ...

    def activation_faulted(self, activation: Activation, error: BaseException) -> None:
        """The database failed the activation's work (``STORE_FAULTS``): it ended with its
        messages pending; start another later, with backoff, without counting a crash.
        """
        ...

    def activation_ended(self, activation: Activation) -> None:
        """The activation stopped (passivated, fenced off, or after a crash was reported)."""
        ...

    def actor_crashed(
        self, activation: Activation, message: Promise | None, error: BaseException
    ) -> None:
        """A handler raised: the actor failed while handling ``message`` (left pending), or
        before handling any (``None``: its state snapshot could not be read).
        """
        ...

    def actor_exited(self, activation: Activation, exit: Exit, error: ErrorInfo | None) -> None:
        """A handler asked the actor to end (``ctx.stop``) and its message is settled."""
        ...

    def spawned(self, actor_id: str, kind: str) -> None:
        """An actor was created from a handler; remember its kind."""
        ...

    def restarted(self, revived: ActorRecord | TakenUp) -> None:
        """An actor's next incarnation was recorded: activate it now, or at its restart time."""
        ...

    def shutdown_activation(self, actor_id: str, timeout: float | None) -> None:
        """Let the actor's activation here finish its current message, for at most ``timeout``
        seconds (``None``: as long as it takes; 0: not at all), and hold new deliveries.
        """
        ...

    def forget(self, actor_id: str) -> None:
        """The actor ended for good: drop what this node knows of it."""
        ...

    def end_children(self, actor_id: str) -> None:
        """End every actor under ``actor_id``, deepest and newest first, each after its own
        shutdown time (the children of a child a supervisor ends: OTP ends the whole subtree).
        """
        ...
