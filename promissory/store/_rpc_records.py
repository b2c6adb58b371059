"""The records of the durable-promise protocol as the store returns them: tasks, schedules,
what an acquire or a suspend found, and the messages waiting in the outbox.

Promises are the store's own ``Promise`` records (a protocol promise is a row of ``promises``).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._records import Promise
from ._rpc_rules import TaskState


class RpcTask(msgspec.Struct, frozen=True, kw_only=True):
    """A protocol task: the work of executing one targeted promise.

    Attributes:
        id: the id of its promise.
        state: where it is in its life.
        version: the fencing token; it grows each time the task goes back to pending.
        pid: the process holding it, while acquired.
        ttl: the lease length in ms, while acquired.
        resumes: the promises it awaited that settled since it was last acquired.
        route: where its execute messages go (see ``route_of``), ``None`` for nowhere.

    """

    id: str
    state: TaskState
    version: int
    pid: str | None = None
    ttl: int | None = None
    resumes: list[str] = []
    route: str | None = None


class RpcSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A protocol schedule: a cron expression and the promise it creates each time it fires."""

    id: str
    cron: str
    promise_id: str
    promise_timeout: int
    promise_param: msgspec.Raw | None = None
    promise_tags: dict[str, str] = {}
    created_at: datetime
    next_run_at: datetime
    last_run_at: datetime | None = None


class Acquired(msgspec.Struct, frozen=True, kw_only=True):
    """A task and its promise, as ``task.acquire`` and ``task.create`` return them, with the
    promises of its branch (``preload``) to seed the replay.
    """

    task: RpcTask
    promise: Promise
    preload: list[Promise] = []


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """A message taken from the outbox to send: ``execute`` (a task at a version) or
    ``unblock`` (a settled promise).
    """

    seq: int
    route: str
    kind: str
    ref: str
    version: int | None = None
    promise: Promise | None = None
    attempts: int = 0
    """How many times it was taken before (a post to an HTTP address that failed, say)."""
