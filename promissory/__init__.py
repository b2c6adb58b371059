"""promissory: a durable actor runtime for AI agents.

Every message an actor receives and every step it takes is a durable promise, a row in
Postgres. The public names users start with are re-exported here: the runtime, plain actors
and supervision (``promissory.actors``), the store's records (``promissory.store``) and the
agent essentials (``promissory.agents`` has the rest: adapters, stop conditions, usage).
The words are defined in docs/glossary.md.

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
from ._tracing import disable_tracing, enable_tracing, tracing_enabled
from ._version import __version__
from .actors import (
    ActorRef,
    AutoShutdown,
    Backoff,
    Canceled,
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
from .agents import (
    Agent,
    MaxTurns,
    NoToolCalls,
    ScriptedModel,
    Tool,
    call,
    mcp_server,
    reply,
    tool,
)
from .protocol import ProtocolServer
from .runtime import Missed, Runtime
from .store import (
    ActorCancel,
    ErrorInfo,
    Outcome,
    Page,
    Promise,
    PromiseKind,
    PromiseState,
    Schedule,
    Store,
    register_error,
)

__all__ = [
    "ActorCancel",
    "ActorRef",
    "Agent",
    "AutoShutdown",
    "Backoff",
    "Canceled",
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
    "MaxTurns",
    "Missed",
    "NoToolCalls",
    "Outcome",
    "Page",
    "Promise",
    "ProtocolServer",
    "PromiseKind",
    "PromiseState",
    "Reply",
    "Restart",
    "RetryPolicy",
    "Runtime",
    "Schedule",
    "ScriptedModel",
    "StepInfo",
    "Store",
    "Strategy",
    "Supervisor",
    "SupervisorRef",
    "Terminated",
    "Tool",
    "call",
    "child",
    "current_step",
    "disable_tracing",
    "enable_tracing",
    "errors",
    "handler",
    "mcp_server",
    "register_error",
    "reply",
    "tool",
    "tracing_enabled",
    "__version__",
]
