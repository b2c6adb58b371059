"""The protocol's wire shapes (version 2026-04-01): request data as msgspec Structs, records
rendered as JSON objects, and values translated between the wire and the ``promises`` table.

A wire value is ``{headers, data}`` with ``data`` the base64 of the value's JSON. It is kept
as that JSON itself, so SQL reads it and an actor awaiting the promise gets the value, not a
base64 string; a value that is not base64 JSON, or has headers, is kept whole under the one
key ``$resonate``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import msgspec

from ..store import NEVER_MS, Promise, RpcSchedule, RpcTask, datetime_to_ms

VERSION = "2026-04-01"
"""The one protocol version served."""

_WRAP = "$resonate"
_WRAP_PREFIX = b'{"' + _WRAP.encode() + b'":'


class Head(msgspec.Struct, kw_only=True, rename="camel"):
    """The ``head`` of a request envelope."""

    corr_id: str | None = None
    version: str | None = None
    auth: str | None = None


class Envelope(msgspec.Struct, kw_only=True):
    """A request: ``{kind, head, data}``."""

    kind: str
    head: Head
    data: dict[str, Any]


class Value(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A value on the wire: headers and base64 data, both optional."""

    headers: dict[str, str] | None = None
    data: str | None = None


class Action(msgspec.Struct, kw_only=True):
    """An envelope nested in a task request (``task.fence``, ``task.suspend``…)."""

    kind: str
    head: Head | None = None
    data: dict[str, Any]


class PromiseId(msgspec.Struct, kw_only=True):
    """``{id}``: promise.get, task.get, task.halt, task.continue, schedule.get/delete."""

    id: str


class PromiseCreate(msgspec.Struct, kw_only=True, rename="camel"):
    """The data of ``promise.create``."""

    id: str
    timeout_at: int
    param: Value | None = None
    tags: dict[str, str] | None = None


class PromiseSettle(msgspec.Struct, kw_only=True):
    """The data of ``promise.settle``."""

    id: str
    state: Literal["resolved", "rejected", "rejected_canceled"]
    value: Value | None = None


class Callback(msgspec.Struct, kw_only=True):
    """The data of ``promise.register_callback``."""

    awaited: str
    awaiter: str


class Listener(msgspec.Struct, kw_only=True):
    """The data of ``promise.register_listener``."""

    awaited: str
    address: str


class PromiseSearch(msgspec.Struct, kw_only=True):
    """The data of ``promise.search``."""

    state: (
        Literal["pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"] | None
    ) = None
    tags: dict[str, str] | None = None
    limit: int | None = None
    cursor: str | None = None


class TaskCreate(msgspec.Struct, kw_only=True):
    """The data of ``task.create``."""

    pid: str
    ttl: int
    action: Action


class TaskAcquire(msgspec.Struct, kw_only=True):
    """The data of ``task.acquire``."""

    id: str
    version: int
    pid: str
    ttl: int


class TaskAt(msgspec.Struct, kw_only=True):
    """``{id, version}``: task.release."""

    id: str
    version: int


class TaskWithAction(msgspec.Struct, kw_only=True):
    """The data of ``task.fulfill`` and ``task.fence``."""

    id: str
    version: int
    action: Action


class TaskSuspend(msgspec.Struct, kw_only=True):
    """The data of ``task.suspend``."""

    id: str
    version: int
    actions: list[Action] = []


class TaskRef(msgspec.Struct, kw_only=True):
    """One task a heartbeat names."""

    id: str
    version: int


class TaskHeartbeat(msgspec.Struct, kw_only=True):
    """The data of ``task.heartbeat``."""

    pid: str
    tasks: list[TaskRef] = []


class TaskSearch(msgspec.Struct, kw_only=True):
    """The data of ``task.search``."""

    state: Literal["pending", "acquired", "suspended", "halted", "fulfilled"] | None = None
    limit: int | None = None
    cursor: str | None = None


class ScheduleCreate(msgspec.Struct, kw_only=True, rename="camel"):
    """The data of ``schedule.create``."""

    id: str
    cron: str
    promise_id: str
    promise_timeout: int
    promise_param: Value | None = None
    promise_tags: dict[str, str] | None = None


class ScheduleSearch(msgspec.Struct, kw_only=True):
    """The data of ``schedule.search``."""

    tags: dict[str, str] | None = None
    limit: int | None = None
    cursor: str | None = None


# -- values -------------------------------------------------------------------------------------

_json_check = msgspec.json.Decoder()


def stored_json(value: Value | None) -> str | None:
    """The JSON to keep for a wire value (``None`` for no value).

    Example:
        >>> stored_json(Value(data="eyJhIjogMX0="))
        '{"a": 1}'

    """
    if value is None or (value.data is None and not value.headers):
        return None
    if not value.headers and value.data is not None:
        try:
            text = base64.b64decode(value.data, validate=True)
            found = _json_check.decode(text)
            # jsonb holds no NUL character, and an object with the wrapping key would read back
            # as a wrapped value: such values are kept wrapped, as they came.
            wrapped = isinstance(found, dict) and _WRAP in found
            if not wrapped and b"\\u0000" not in text:
                return text.decode("utf-8")
        except (binascii.Error, ValueError, msgspec.DecodeError, UnicodeDecodeError):
            pass
    return msgspec.json.encode({_WRAP: msgspec.structs.asdict(value)}).decode()


def wire_value(raw: msgspec.Raw | bytes | None) -> dict[str, Any]:
    """The wire value of kept JSON (``{}`` for none)."""
    if raw is None:
        return {}
    data = bytes(raw)
    if data.startswith(_WRAP_PREFIX):
        inner = msgspec.json.decode(data)[_WRAP]
        return {k: v for k, v in inner.items() if v is not None}
    return {"data": base64.b64encode(data).decode("ascii")}


# -- records ------------------------------------------------------------------------------------


def promise_record(p: Promise) -> dict[str, Any]:
    """A promise as the protocol shows it (timestamps in ms since the epoch)."""
    record: dict[str, Any] = {
        "id": p.id,
        "state": p.state.value,
        "param": wire_value(p.param),
        "value": wire_value(p.value),
        "tags": p.tags,
        "timeoutAt": datetime_to_ms(p.timeout_at) if p.timeout_at is not None else NEVER_MS,
        "createdAt": datetime_to_ms(p.created_at),
    }
    if p.settled_at is not None:
        record["settledAt"] = datetime_to_ms(p.settled_at)
    return record


def task_record(t: RpcTask) -> dict[str, Any]:
    """A task as the protocol shows it."""
    record: dict[str, Any] = {"id": t.id, "state": t.state.value, "version": t.version}
    if t.resumes:
        record["resumes"] = t.resumes
    if t.pid is not None:
        record["pid"] = t.pid
    if t.ttl is not None:
        record["ttl"] = t.ttl
    return record


def schedule_record(s: RpcSchedule) -> dict[str, Any]:
    """A schedule as the protocol shows it."""
    return {
        "id": s.id,
        "cron": s.cron,
        "promiseId": s.promise_id,
        "promiseTimeout": s.promise_timeout,
        "promiseParam": wire_value(s.promise_param),
        "promiseTags": s.promise_tags,
        "createdAt": datetime_to_ms(s.created_at),
        "nextRunAt": datetime_to_ms(s.next_run_at),
        "lastRunAt": datetime_to_ms(s.last_run_at) if s.last_run_at else None,
    }


def execute_message(task_id: str, version: int) -> bytes:
    """The push message that tells a worker to acquire a task."""
    return msgspec.json.encode(
        {"kind": "execute", "data": {"task": {"id": task_id, "version": version}}}
    )


def unblock_message(promise: Promise) -> bytes:
    """The push message that tells a listener a promise settled."""
    return msgspec.json.encode({"kind": "unblock", "data": {"promise": promise_record(promise)}})
