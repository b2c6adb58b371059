"""Durable actors: a mailbox of promises, journaled steps with replay, suspension, supervision.

This layer knows nothing of models or tools; the runtime hosts its activations.
"""

from ._activation import UnknownMessageError
from ._actor import DurableActor, handler
from ._cancel import Cancelled
from ._children import ChildDef, ChildInfo, ChildResult, Counts, SupervisorRef, child
from ._context import Context, DurablePromise
from ._host import Host
from ._ref import ActorRef, Reply
from ._retry import RetryPolicy
from ._signals import ChildExit, Terminated
from ._spec import Backoff, ChildSpec, Exit, Restart
from ._steps import StepCall, StepInfo, StepOutcome, current_step
from ._strategy import AutoShutdown, Strategy
from ._supervisor import EscalationError, Supervisor

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
    "EscalationError",
    "Exit",
    "Host",
    "Reply",
    "Restart",
    "RetryPolicy",
    "StepCall",
    "StepInfo",
    "StepOutcome",
    "Strategy",
    "Supervisor",
    "SupervisorRef",
    "Terminated",
    "UnknownMessageError",
    "child",
    "current_step",
    "handler",
]
