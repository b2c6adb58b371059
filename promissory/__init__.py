"""promissory: a durable actor runtime for AI agents.

Every message an actor receives and every step it takes is a durable promise, a row in
Postgres. The public names are re-exported here.

Example:
    >>> from promissory import Runtime, DurableActor, Context, handler
    >>> class Greeter(DurableActor):
    ...     @handler
    ...     def greet(self, ctx: Context, name: str) -> str:
    ...         return ctx.step(str.upper, f"hello, {name}")
    >>> with Runtime() as rt:  # doctest: +SKIP
    ...     rt.spawn(Greeter, id="greeter").ask("ada").get(timeout=5)
    'HELLO, ADA'

"""

from . import errors
from .actors import (
    ActorRef,
    AutoShutdown,
    Backoff,
    Cancelled,
    ChildDef,
    ChildExit,
    ChildInfo,
    ChildResult,
    ChildSpec,
    Context,
    Counts,
    DurableActor,
    DurablePromise,
    Exit,
    Reply,
    Restart,
    RetryPolicy,
    StepInfo,
    Strategy,
    Supervisor,
    SupervisorRef,
    Terminated,
    child,
    current_step,
    handler,
)
from .runtime import Runtime
from .store import (
    ActorCancel,
    ErrorInfo,
    Outcome,
    Page,
    Promise,
    PromiseKind,
    PromiseState,
    Store,
)

__version__ = "0.1.0"

__all__ = [
    "ActorRef",
    "AutoShutdown",
    "Backoff",
    "Cancelled",
    "ChildDef",
    "ChildExit",
    "ChildInfo",
    "ChildResult",
    "ChildSpec",
    "Context",
    "Counts",
    "DurableActor",
    "DurablePromise",
    "ErrorInfo",
    "Exit",
    "ActorCancel",
    "Outcome",
    "Page",
    "Promise",
    "PromiseKind",
    "PromiseState",
    "Reply",
    "Restart",
    "RetryPolicy",
    "Runtime",
    "StepInfo",
    "Store",
    "Strategy",
    "Supervisor",
    "SupervisorRef",
    "Terminated",
    "child",
    "current_step",
    "errors",
    "handler",
]
