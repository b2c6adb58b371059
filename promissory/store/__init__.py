"""The durable promise store: Postgres schema, promise state machine, group commit, events.

This layer knows nothing of actors' code or agents: it keeps promises and actor rows and says
when they change. See ``Store`` for the promise operations.
"""

from . import _views as views  # noqa: F401  (the web view's reads, an internal name)
from ._codec import decode, encode
from ._connection import STORE_FAULTS
from ._embedded import EmbeddedServer, home, resolve_dsn
from ._events import Expectation, Subscription
from ._failures import error_info, rebuild_error, register_error
from ._forget import Forgotten
from ._ops import EventKind, Op as Op, bundle as bundle
from ._records import ActorCancel, ErrorInfo, Outcome, Page, Promise, PromiseKind, PromiseState
from ._schedules import Schedule
from ._schema import LATEST as SCHEMA_VERSION
from ._store import Store
from ._validate import Timeout

__all__ = [
    "ActorCancel",
    "SCHEMA_VERSION",
    "STORE_FAULTS",
    "Schedule",
    "EmbeddedServer",
    "ErrorInfo",
    "EventKind",
    "Forgotten",
    "Outcome",
    "Page",
    "Promise",
    "PromiseKind",
    "PromiseState",
    "Store",
    "Expectation",
    "Subscription",
    "Timeout",
    "decode",
    "encode",
    "error_info",
    "home",
    "rebuild_error",
    "register_error",
    "resolve_dsn",
]


# -- for the layers above: not user API (no promise of stability), but the one door to this
# package's insides; tests/test_package.py refuses an import of a private module across layers.

from ._actors import (
    DECISION_BITS as DECISION_BITS,
    ActorRecord as ActorRecord,
    ActorStatus as ActorStatus,
    Fence as Fence,
    claim_op as claim_op,
    spawn_op as spawn_op,
    watch_op as watch_op,
)
from ._connection import (
    backoff_delay as backoff_delay,
    check_dsn as check_dsn,
    redact as redact,
    scrub as scrub,
)
from ._embedded import (
    stop_embedded as stop_embedded,
)
from ._handling import (
    Completion as Completion,
    Occupied as Occupied,
    Sent as Sent,
    cleaned_op as cleaned_op,
    complete_op as complete_op,
    now_step_op as now_step_op,
    promise_step_op as promise_step_op,
    send_op as send_op,
    spawn_send_op as spawn_send_op,
    step_op as step_op,
    suspend_op as suspend_op,
)
from ._handoff import (
    Signal as Signal,
)
from ._nodes import (
    LEASE_PING as LEASE_PING,
    LEASE_SILENCE as LEASE_SILENCE,
    LEASE_TRUST as LEASE_TRUST,
    NodeInfo as NodeInfo,
    NodeLease as NodeLease,
    adopt_node as adopt_node,
    dead_nodes as dead_nodes,
    live_nodes as live_nodes,
    lock_connection as lock_connection,
    new_node_id as new_node_id,
    node_listing as node_listing,
)
from ._outage import (
    OutageLog as OutageLog,
    describe as describe,
)
from ._reads import (
    ACTOR_WORDS as ACTOR_WORDS,
    EndingView as EndingView,
    JournalLoad as JournalLoad,
    MailboxEntry as MailboxEntry,
    TreeRow as TreeRow,
)
from ._rpc import RpcStore as RpcStore
from ._rpc_records import (
    Acquired as Acquired,
    Delivery as Delivery,
    RpcSchedule as RpcSchedule,
    RpcTask as RpcTask,
)
from ._rpc_rules import (
    NEVER_MS as NEVER_MS,
    TaskState as TaskState,
    datetime_to_ms as datetime_to_ms,
    route_of as route_of,
)
from ._schedules import (
    advance_schedule as advance_schedule,
    claim_firing as claim_firing,
    delete_schedule as delete_schedule,
    due_schedules as due_schedules,
    find_schedule as find_schedule,
    list_schedules as list_schedules,
    put_schedule as put_schedule,
    seconds_to_next_firing as seconds_to_next_firing,
    set_schedule_paused as set_schedule_paused,
)
from ._sql import (
    StatementResult as StatementResult,
    run_sql as run_sql,
)
from ._supervision import (
    bounce_op as bounce_op,
    due_restart_op as due_restart_op,
    end_actor_op as end_actor_op,
    exit_op as exit_op,
    mark_ending_op as mark_ending_op,
    revive_op as revive_op,
)
from ._take_up import (
    TakenUp as TakenUp,
    take_up_op as take_up_op,
)
from ._validate import (
    MAX_ACTOR_ID_LENGTH as MAX_ACTOR_ID_LENGTH,
    MAX_PAGE as MAX_PAGE,
    check_id as check_id,
    timeout_parts as timeout_parts,
)

__internal__ = [
    "ACTOR_WORDS",
    "Acquired",
    "Delivery",
    "NEVER_MS",
    "RpcSchedule",
    "RpcStore",
    "RpcTask",
    "TaskState",
    "datetime_to_ms",
    "route_of",
    "Op",
    "Sent",
    "bundle",
    "ActorRecord",
    "ActorStatus",
    "Completion",
    "DECISION_BITS",
    "Fence",
    "MAX_ACTOR_ID_LENGTH",
    "MAX_PAGE",
    "NodeLease",
    "OutageLog",
    "StatementResult",
    "TreeRow",
    "LEASE_PING",
    "LEASE_SILENCE",
    "LEASE_TRUST",
    "NodeInfo",
    "adopt_node",
    "advance_schedule",
    "claim_firing",
    "delete_schedule",
    "due_schedules",
    "find_schedule",
    "list_schedules",
    "put_schedule",
    "seconds_to_next_firing",
    "set_schedule_paused",
    "dead_nodes",
    "live_nodes",
    "node_listing",
    "backoff_delay",
    "bounce_op",
    "check_dsn",
    "check_id",
    "claim_op",
    "take_up_op",
    "EndingView",
    "Signal",
    "JournalLoad",
    "MailboxEntry",
    "TakenUp",
    "cleaned_op",
    "complete_op",
    "describe",
    "due_restart_op",
    "end_actor_op",
    "exit_op",
    "lock_connection",
    "mark_ending_op",
    "new_node_id",
    "now_step_op",
    "promise_step_op",
    "redact",
    "revive_op",
    "run_sql",
    "scrub",
    "send_op",
    "spawn_op",
    "step_op",
    "stop_embedded",
    "suspend_op",
    "timeout_parts",
    "views",
    "watch_op",
]
"""Names the layers above import from here that are not in ``__all__``."""
