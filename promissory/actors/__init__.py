"""Durable actors: a mailbox of promises, journaled steps with replay, suspension, supervision.

This layer knows nothing of models or tools; the runtime hosts its activations.
"""

from ._activation import UnknownMessageError
from ._actor import DurableActor, handler
from ._context import Context, DurablePromise, StepInfo, current_step
from ._host import Host
from ._ref import ActorRef, Reply
from ._retry import RetryPolicy
from ._spec import Backoff, ChildSpec, Exit, Restart

__all__ = [
    "ActorRef",
    "Backoff",
    "ChildSpec",
    "Context",
    "DurableActor",
    "DurablePromise",
    "Exit",
    "Host",
    "Reply",
    "Restart",
    "RetryPolicy",
    "StepInfo",
    "UnknownMessageError",
    "current_step",
    "handler",
]
