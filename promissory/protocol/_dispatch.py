"""``POST /``: one request envelope in, one response envelope out, its status the HTTP status.

``answer`` parses the envelope, checks its version and token, converts ``data`` to the kind's
Struct (a shape that does not fit is a 400 naming the field), runs the operation on the store
and renders the records. A refused request (``ProtocolError``) is answered with its status
and its message as ``data``; nothing was written.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from ..errors import ProtocolError, StoreError
from ..store import MAX_PAGE, PromiseState, RpcStore, TaskState
from ._wire import (
    VERSION,
    Action,
    Callback,
    Envelope,
    Listener,
    PromiseCreate,
    PromiseId,
    PromiseSearch,
    PromiseSettle,
    ScheduleCreate,
    ScheduleSearch,
    TaskAcquire,
    TaskAt,
    TaskCreate,
    TaskHeartbeat,
    TaskSearch,
    TaskSuspend,
    TaskWithAction,
    promise_record,
    schedule_record,
    stored_json,
    task_record,
)

S = TypeVar("S")
Data = dict[str, Any]
Handler = Callable[[RpcStore, Data], Awaitable[tuple[int, Any]]]

_envelope_decoder = msgspec.json.Decoder(Envelope)
_STATE = {s.value: s for s in PromiseState}


def _convert(data: Any, shape: type[S], kind: str) -> S:
    try:
        return msgspec.convert(data, shape)
    except msgspec.ValidationError as exc:
        raise ProtocolError(400, f"{kind}: invalid data: {exc}") from None


def _limit(limit: int | None) -> int:
    if limit is None:
        return 100
    if not 1 <= limit <= MAX_PAGE:
        raise ProtocolError(400, f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def _action(action: Action, kind: str, shape: type[S], parent: str) -> S:
    if action.kind != kind:
        raise ProtocolError(400, f"{parent}: the action must be {kind}, got {action.kind!r}")
    if action.head is not None and action.head.version not in (None, VERSION):
        raise ProtocolError(400, f"{parent}: unsupported version {action.head.version!r}")
    return _convert(action.data, shape, f"{parent} action {kind}")


# -- promises -----------------------------------------------------------------------------------


async def _promise_get(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseId, "promise.get")
    return 200, {"promise": promise_record(await rpc.promise_get(req.id))}


async def _promise_create(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseCreate, "promise.create")
    promise, created = await rpc.promise_create(
        req.id, timeout_at=req.timeout_at, param=stored_json(req.param), tags=req.tags or {}
    )
    return (201 if created else 200), {"promise": promise_record(promise)}


async def _promise_settle(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseSettle, "promise.settle")
    promise = await rpc.promise_settle(req.id, _STATE[req.state], stored_json(req.value))
    return 200, {"promise": promise_record(promise)}


async def _register_callback(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, Callback, "promise.register_callback")
    return 200, {"promise": promise_record(await rpc.register_callback(req.awaited, req.awaiter))}


async def _register_listener(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, Listener, "promise.register_listener")
    return 200, {"promise": promise_record(await rpc.register_listener(req.awaited, req.address))}


async def _promise_search(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseSearch, "promise.search")
    page = await rpc.promise_search(
        state=_STATE[req.state] if req.state else None,
        tags=req.tags,
        limit=_limit(req.limit),
        cursor=req.cursor,
    )
    return 200, {"promises": [promise_record(p) for p in page.items], "cursor": page.cursor}


# -- tasks --------------------------------------------------------------------------------------


async def _task_get(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseId, "task.get")
    return 200, {"task": task_record(await rpc.task_get(req.id))}


async def _task_create(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskCreate, "task.create")
    create = _action(req.action, "promise.create", PromiseCreate, "task.create")
    found, created = await rpc.task_create(
        pid=req.pid,
        ttl=req.ttl,
        id=create.id,
        timeout_at=create.timeout_at,
        param=stored_json(create.param),
        tags=create.tags or {},
    )
    return (201 if created else 200), {
        "task": task_record(found.task),
        "promise": promise_record(found.promise),
        "preload": [promise_record(p) for p in found.preload],
    }


async def _task_acquire(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskAcquire, "task.acquire")
    found = await rpc.task_acquire(req.id, req.version, req.pid, req.ttl)
    return 200, {
        "task": task_record(found.task),
        "promise": promise_record(found.promise),
        "preload": [promise_record(p) for p in found.preload],
    }


async def _task_release(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskAt, "task.release")
    await rpc.task_release(req.id, req.version)
    return 200, {}


async def _task_fulfill(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskWithAction, "task.fulfill")
    settle = _action(req.action, "promise.settle", PromiseSettle, "task.fulfill")
    if settle.id != req.id:
        raise ProtocolError(400, f"task.fulfill: the action settles {settle.id!r}, not the task")
    promise = await rpc.task_fulfill(
        req.id, req.version, _STATE[settle.state], stored_json(settle.value)
    )
    return 200, {"promise": promise_record(promise)}


async def _task_suspend(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskSuspend, "task.suspend")
    awaited = []
    for action in req.actions:
        callback = _action(action, "promise.register_callback", Callback, "task.suspend")
        if callback.awaiter != req.id:
            raise ProtocolError(
                400,
                f"task.suspend: the awaiter must be the task {req.id!r}, not {callback.awaiter!r}",
            )
        awaited.append(callback.awaited)
    preload = await rpc.task_suspend(req.id, req.version, awaited)
    if preload is None:
        return 200, {}
    return 300, {"preload": [promise_record(p) for p in preload]}


async def _task_fence(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskWithAction, "task.fence")
    head = req.action.head
    corr = head.corr_id if head else None
    if req.action.kind == "promise.create":
        create = _action(req.action, "promise.create", PromiseCreate, "task.fence")
        (promise, created), preload = await rpc.task_fence(
            req.id,
            req.version,
            rpc.fence_create(
                create.id,
                timeout_at=create.timeout_at,
                param=stored_json(create.param),
                tags=create.tags or {},
            ),
        )
        status = 201 if created else 200
    elif req.action.kind == "promise.settle":
        settle = _action(req.action, "promise.settle", PromiseSettle, "task.fence")
        promise, preload = await rpc.task_fence(
            req.id,
            req.version,
            rpc.fence_settle(settle.id, _STATE[settle.state], stored_json(settle.value)),
        )
        status = 200
    else:
        raise ProtocolError(
            400,
            "task.fence: the action must be promise.create or promise.settle, "
            f"got {req.action.kind!r}",
        )
    inner = {
        "kind": req.action.kind,
        "head": {"corrId": corr, "status": status, "version": VERSION},
        "data": {"promise": promise_record(promise)},
    }
    return 200, {"action": inner, "preload": [promise_record(p) for p in preload]}


async def _task_heartbeat(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskHeartbeat, "task.heartbeat")
    await rpc.task_heartbeat(req.pid, [(t.id, t.version) for t in req.tasks])
    return 200, {}


async def _task_halt(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    await rpc.task_halt(_convert(data, PromiseId, "task.halt").id)
    return 200, {}


async def _task_continue(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    await rpc.task_continue(_convert(data, PromiseId, "task.continue").id)
    return 200, {}


async def _task_search(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, TaskSearch, "task.search")
    tasks, cursor = await rpc.task_search(
        state=TaskState(req.state) if req.state else None,
        limit=_limit(req.limit),
        cursor=req.cursor,
    )
    return 200, {"tasks": [task_record(t) for t in tasks], "cursor": cursor}


# -- schedules ----------------------------------------------------------------------------------


async def _schedule_create(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, ScheduleCreate, "schedule.create")
    schedule, created = await rpc.schedule_create(
        req.id,
        cron=req.cron,
        promise_id=req.promise_id,
        promise_timeout=req.promise_timeout,
        promise_param=stored_json(req.promise_param),
        promise_tags=req.promise_tags or {},
    )
    return (201 if created else 200), {"schedule": schedule_record(schedule)}


async def _schedule_get(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, PromiseId, "schedule.get")
    return 200, {"schedule": schedule_record(await rpc.schedule_get(req.id))}


async def _schedule_delete(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    await rpc.schedule_delete(_convert(data, PromiseId, "schedule.delete").id)
    return 200, {}


async def _schedule_search(rpc: RpcStore, data: Data) -> tuple[int, Any]:
    req = _convert(data, ScheduleSearch, "schedule.search")
    found, cursor = await rpc.schedule_search(
        tags=req.tags, limit=_limit(req.limit), cursor=req.cursor
    )
    return 200, {"schedules": [schedule_record(s) for s in found], "cursor": cursor}


KINDS: dict[str, Handler] = {
    "promise.get": _promise_get,
    "promise.create": _promise_create,
    "promise.settle": _promise_settle,
    "promise.register_callback": _register_callback,
    "promise.register_listener": _register_listener,
    "promise.search": _promise_search,
    "task.get": _task_get,
    "task.create": _task_create,
    "task.acquire": _task_acquire,
    "task.release": _task_release,
    "task.fulfill": _task_fulfill,
    "task.suspend": _task_suspend,
    "task.fence": _task_fence,
    "task.heartbeat": _task_heartbeat,
    "task.halt": _task_halt,
    "task.continue": _task_continue,
    "task.search": _task_search,
    "schedule.get": _schedule_get,
    "schedule.create": _schedule_create,
    "schedule.delete": _schedule_delete,
    "schedule.search": _schedule_search,
}
"""Every operation served, by kind."""


def _what_it_was(body: bytes) -> tuple[str, str | None]:
    # The kind and corrId of a malformed envelope, when they can be read, to answer in kind.
    try:
        found = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "", None
    if not isinstance(found, dict):
        return "", None
    kind = found.get("kind")
    head = found.get("head")
    corr = head.get("corrId") if isinstance(head, dict) else None
    return (kind if isinstance(kind, str) else ""), (corr if isinstance(corr, str) else None)


def token_matches(given: str | None, token: str | None) -> bool:
    """Whether ``given`` is the token (always, when there is none), in constant time."""
    if token is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


async def answer(
    rpc: RpcStore, body: bytes, *, token: str | None = None, bearer: str | None = None
) -> tuple[int, bytes]:
    """The status and the response envelope for the request envelope ``body``.

    ``bearer`` is the token of the ``Authorization`` header; with a ``token`` set, it or the
    envelope's ``head.auth`` must match (else 401).

    Example:
        >>> await answer(rpc, b'{"kind": "promise.get", "head": {"corrId": "1", '
        ...              b'"version": "2026-04-01"}, "data": {"id": "p"}}')  # doctest: +SKIP
        (404, b'{"kind":"promise.get","head":{"corrId":"1","status":404,...')

    """
    kind = ""
    corr: str | None = None
    try:
        try:
            envelope = _envelope_decoder.decode(body)
        except msgspec.DecodeError as exc:
            kind, corr = _what_it_was(body)
            raise ProtocolError(400, f"malformed envelope: {exc}") from None
        kind, corr = envelope.kind, envelope.head.corr_id
        if not token_matches(bearer, token) and not token_matches(envelope.head.auth, token):
            raise ProtocolError(401, "unauthorized: a valid bearer token is required")
        if envelope.head.version != VERSION:
            raise ProtocolError(
                400,
                f"unsupported protocol version {envelope.head.version!r}; "
                f"this server speaks {VERSION!r}",
            )
        handler = KINDS.get(kind)
        if handler is None:
            if kind.startswith("debug."):
                raise ProtocolError(403, f"{kind} is not served")
            raise ProtocolError(400, f"unknown kind {kind!r}")
        status, data = await handler(rpc, envelope.data)
    except ProtocolError as exc:
        status, data = exc.status, exc.message
    except StoreError as exc:
        status, data = 503, f"the store is unavailable: {exc}"
    response = {
        "kind": kind,
        "head": {"corrId": corr, "status": status, "version": VERSION},
        "data": data,
    }
    return status, msgspec.json.encode(response)
