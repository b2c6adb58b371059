"""Durable actors: a mailbox of promises, journaled steps with replay, suspension, supervision.

This layer knows nothing of models or tools; the runtime hosts its activations.
"""

from ..errors import EscalationError, UnknownMessageError
from ._actor import DurableActor
from ._cancel import Canceled
from ._children import ChildDef, ChildInfo, ChildResult, Counts, SupervisorRef, child
from ._context import Context, DurablePromise
from ._handlers import handler
from ._hosting import Host
from ._journal import StepKind
from ._ref import ActorRef, Reply
from ._retry import RetryPolicy
from ._signals import ChildExit, Terminated
from ._spec import Backoff, ChildSpec, Exit, Restart
from ._steps import StepCall, StepInfo, StepOutcome, current_step
from ._strategy import AutoShutdown, Strategy
from ._supervisor import Supervisor

__all__ = [
    "ActorRef",
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
    "EscalationError",
    "Exit",
    "Host",
    "Reply",
    "Restart",
    "RetryPolicy",
    "StepCall",
    "StepInfo",
    "StepKind",
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


# -- for the layers above: not user API (no promise of stability), but the one door to this
# package's insides; tests/test_package.py refuses an import of a private module across layers.

from ._activation import (
    Activation as Activation,
    Binding as Binding,
    Fresh as Fresh,
    Passivate as Passivate,
    Poke as Poke,
)
from ._actor import (
    start_activation as start_activation,
)
from ._cancel import (
    CancelState as CancelState,
    EndOfJournal as EndOfJournal,
)
from ._handlers import (
    check_state as check_state,
    handler_for as handler_for,
)
from ._ids import (
    new_message_id as new_message_id,
    step_id as step_id,
)
from ._journal import (
    Journal as Journal,
)
from ._messages import (
    TYPE_TAG as TYPE_TAG,
    start_message as start_message,
)
from ._rows import (
    child_view as child_view,
    end_child as end_child,
    spec_of as spec_of,
)
from ._signals import (
    Suspend as Suspend,
    wait_is_over as wait_is_over,
)
from ._spec import (
    should_restart as should_restart,
)
from ._steps import (
    STEP_ATTRIBUTE as STEP_ATTRIBUTE,
)
from ._strategy import (
    Revive as Revive,
    plan_exit as plan_exit,
)
from ._types import (
    check_hostable_name as check_hostable_name,
    known_types as known_types,
    registered_type as registered_type,
    types_version as types_version,
)

__internal__ = [
    "check_hostable_name",
    "known_types",
    "registered_type",
    "types_version",
    "Activation",
    "Binding",
    "CancelState",
    "EndOfJournal",
    "Journal",
    "Passivate",
    "Fresh",
    "Poke",
    "Revive",
    "STEP_ATTRIBUTE",
    "Suspend",
    "TYPE_TAG",
    "check_state",
    "child_view",
    "end_child",
    "handler_for",
    "plan_exit",
    "should_restart",
    "spec_of",
    "start_activation",
    "start_message",
    "step_id",
    "wait_is_over",
]
"""Names the layers above import from here that are not in ``__all__``."""
