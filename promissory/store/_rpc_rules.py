"""The durable-promise protocol's rules, as plain functions of their inputs.

What a timeout settles a promise to, which promises are external (their timeouts are armed and
they accept callbacks and listeners), what an address routes to, what a create may ask for,
when a task may move, and when a cron schedule fires next. The SQL in ``_rpc`` drives them;
tests check them exhaustively. Statuses are the protocol's: 400 malformed, 404 missing, 409 a
task not in the state (or at the version) asked, 422 an obligation an internal promise cannot
take.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ..errors import ProtocolError
from ._records import PromiseState

TARGET = "resonate:target"
TIMER = "resonate:timer"
DELAY = "resonate:delay"
EXTERNAL = "resonate:external"
SCOPE = "resonate:scope"
LINEAGE_TAGS = ("resonate:origin", "resonate:branch", "resonate:parent")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER_MS = (1 << 63) - 1
"""The ``timeoutAt`` of a promise that never times out (stored as a NULL ``timeout_at``)."""
_LAST_MS = 253402300799999  # 9999-12-31T23:59:59.999Z, the last instant Python can hold

RETRY = timedelta(seconds=30)
"""How long a pending task waits before its execute message is sent again."""
TAKE_LEASE = timedelta(seconds=30)
"""How long a message taken from the outbox is held by the node that took it: if that node
dies before handing it over, another takes it when this has passed."""
OUTBOX_KEEP = timedelta(hours=1)
"""How long a push message waits for a worker to take it before it is dropped (an execute is
sent again while its task is pending; an unblock for a worker gone that long is not needed)."""


class TaskState(enum.StrEnum):
    """The five states of a protocol task; ``FULFILLED`` is final."""

    PENDING = "pending"
    ACQUIRED = "acquired"
    SUSPENDED = "suspended"
    HALTED = "halted"
    FULFILLED = "fulfilled"


# -- promises -----------------------------------------------------------------------------------


def is_timer(tags: Mapping[str, str]) -> bool:
    """Whether the promise is a durable sleep: resolved, not timed out, at its deadline."""
    return tags.get(TIMER) == "true"


def timeout_state(tags: Mapping[str, str]) -> PromiseState:
    """The state a pending promise takes when its timeout passes: timeout always wins.

    Example:
        >>> timeout_state({"resonate:timer": "true"}), timeout_state({})
        (<PromiseState.RESOLVED: 'resolved'>, <PromiseState.REJECTED_TIMEDOUT: 'rejected_timedout'>)

    """
    return PromiseState.RESOLVED if is_timer(tags) else PromiseState.REJECTED_TIMEDOUT


def is_external(tags: Mapping[str, str]) -> bool:
    """Whether the promise is external: awaitable, its timeout armed (timed out by the server at
    its deadline, with its effects), able to take callbacks and listeners. Internal promises
    (``resonate:scope=local``) time out lazily, when touched.
    """
    return (
        TARGET in tags
        or is_timer(tags)
        or tags.get(EXTERNAL) == "true"
        or tags.get(SCOPE) == "global"
    )


def origin_of(id: str) -> str:
    """The lineage origin of a promise id: everything before its first ``:``."""
    return id.split(":", 1)[0]


def extends(id: str, ancestor: str) -> bool:
    """Whether ``id`` is ``ancestor`` or lies below it in the lineage (``a`` -> ``a:1.2``)."""
    return id == ancestor or id.startswith(ancestor + (":" if ":" not in ancestor else "."))


def ms_to_datetime(ms: int) -> datetime | None:
    """A protocol timestamp (ms since the epoch) as a datetime; ``None`` for never (beyond
    what a datetime holds).
    """
    if ms > _LAST_MS:
        return None
    return EPOCH + timedelta(milliseconds=max(ms, -62135596800000))


def datetime_to_ms(at: datetime | None) -> int:
    """A datetime as a protocol timestamp (ms since the epoch); ``None`` is never."""
    if at is None:
        return NEVER_MS
    return (at - EPOCH) // timedelta(milliseconds=1)


def check_id(id: str, what: str = "id") -> None:
    """Refuse an empty id or one holding a null byte (400)."""
    if not id:
        raise ProtocolError(400, f"{what} must not be empty")
    if "\x00" in id:
        raise ProtocolError(400, f"{what} must not contain a null byte")


def check_create(id: str, timeout_at: int, tags: Mapping[str, str]) -> None:
    """Refuse a ``promise.create`` the protocol does not allow (400), naming what is wrong.

    The id must extend the ``resonate:origin``, ``resonate:branch`` and ``resonate:parent`` it
    declares (an origin holds no ``:``); a ``resonate:delay`` is an integer before the timeout
    and needs a target; a target is an address this server can deliver to.
    """
    check_id(id)
    for key, value in tags.items():
        if "\x00" in key or "\x00" in value:
            raise ProtocolError(400, f"tag {key!r} must not contain a null byte")
    origin = tags.get("resonate:origin")
    if origin is not None and ":" in origin:
        raise ProtocolError(400, f"resonate:origin {origin!r} must not contain ':'")
    for key in LINEAGE_TAGS:
        ancestor = tags.get(key)
        if ancestor is not None and not extends(id, ancestor):
            raise ProtocolError(400, f"id {id!r} does not extend its {key} {ancestor!r}")
    if DELAY in tags:
        try:
            delay = int(tags[DELAY])
        except ValueError:
            raise ProtocolError(400, f"resonate:delay {tags[DELAY]!r} is not an integer") from None
        if TARGET not in tags:
            raise ProtocolError(400, "resonate:delay needs a resonate:target")
        if delay >= timeout_at:
            raise ProtocolError(400, "resonate:delay must be before timeoutAt")
    if TARGET in tags:
        route_of(tags[TARGET])


def route_of(address: str) -> str:
    """Where an address delivers, as the outbox and the poll streams name it.

    ``poll://uni@group/pid`` is one process (``uni:group/pid``); ``poll://any@group`` (or
    ``poll://any@group/pid``, a preference) is any one member of a group (``any:group``);
    ``http(s)://…`` is posted to (``http:<url>``).

    Example:
        >>> route_of("poll://uni@workers/7f3a"), route_of("poll://any@workers")
        ('uni:workers/7f3a', 'any:workers')

    Raises:
        ProtocolError: 400, an address of no known form.

    """
    if address.startswith(("http://", "https://")) and len(address) > 8:
        return "http:" + address
    scheme, sep, rest = address.partition("://")
    who, at, where = rest.partition("@")
    group, _, pid = where.partition("/")
    if scheme == "poll" and sep and at and group:
        if who == "uni" and pid and "/" not in pid:
            return f"uni:{group}/{pid}"
        if who == "any":
            return f"any:{group}"
    raise ProtocolError(
        400,
        f"invalid address {address!r}: expected poll://uni@GROUP/ID, "
        "poll://any@GROUP or an http(s) URL",
    )


# -- tasks --------------------------------------------------------------------------------------


def check_lease(state: TaskState, version: int, asked: int, kind: str) -> None:
    """Refuse (409) an operation on a task that is not acquired at the version asked: a stale
    holder (its lease expired, the task was redispatched) can keep nothing. This is the fence
    of ``task.fence``, ``task.fulfill``, ``task.suspend`` and ``task.release``.
    """
    if state is not TaskState.ACQUIRED:
        raise ProtocolError(409, f"{kind}: task is {state.value}, not acquired")
    if version != asked:
        raise ProtocolError(409, f"{kind}: task is at version {version}, not {asked}")


def check_acquire(state: TaskState, version: int, asked: int, promise: PromiseState) -> None:
    """Refuse (409) ``task.acquire`` of a task that is not pending at that version, or whose
    promise has settled.
    """
    if promise.settled or state is TaskState.FULFILLED:
        raise ProtocolError(409, "task.acquire: its promise is settled")
    if state is not TaskState.PENDING:
        raise ProtocolError(409, f"task.acquire: task is {state.value}, not pending")
    if version != asked:
        raise ProtocolError(409, f"task.acquire: task is at version {version}, not {asked}")


# -- schedules ----------------------------------------------------------------------------------

_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def parse_cron(cron: str) -> tuple[frozenset[int], ...]:
    """The five fields of a cron expression as sets of values.

    Fields are ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n`` / ``a-b/n``; a
    day of week of 7 is Sunday, as 0 is.

    Example:
        >>> sorted(parse_cron("*/20 * * * *")[0])
        [0, 20, 40]

    Raises:
        ProtocolError: 400, naming the field that does not parse.

    """
    parts = cron.split()
    if len(parts) != 5:
        raise ProtocolError(400, f"cron {cron!r} must have 5 fields, has {len(parts)}")
    fields = []
    for part, (low, high), name in zip(parts, _FIELDS, _NAMES, strict=True):
        top = 7 if name == "day of week" else high
        values: set[int] = set()
        try:
            for item in part.split(","):
                span, _, step_text = item.partition("/")
                step = int(step_text) if step_text else 1
                if span == "*":
                    a, b = low, high
                elif "-" in span:
                    a_text, b_text = span.split("-", 1)
                    a, b = int(a_text), int(b_text)
                else:
                    a = int(span)
                    b = high if step_text else a
                if step < 1 or not (low <= a <= b <= top):
                    raise ValueError
                values.update(range(a, b + 1, step))
        except ValueError:
            raise ProtocolError(400, f"cron {cron!r}: bad {name} field {part!r}") from None
        if name == "day of week" and 7 in values:
            values = (values - {7}) | {0}
        fields.append(frozenset(values))
    return tuple(fields)


def next_run(cron: str, after: datetime) -> datetime:
    """The first minute strictly after ``after`` (UTC) that ``cron`` names.

    Raises:
        ProtocolError: 400, a cron that names no minute in the next five years (``0 0 30 2 *``).

    """
    minutes, hours, days, months, weekdays = parse_cron(cron)
    start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    for _ in range(366 * 5):
        if day.month in months and day.day in days and (day.weekday() + 1) % 7 in weekdays:
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    at = day.replace(hour=hour, minute=minute)
                    if at >= start:
                        return at
        day += timedelta(days=1)
    raise ProtocolError(400, f"cron {cron!r} never fires")


def schedule_promise_id(template: str, schedule_id: str, at: datetime) -> str:
    """The id of the promise a schedule creates at ``at``: ``{{.id}}`` and ``{{.timestamp}}``
    (ms) filled in.
    """
    return template.replace("{{.id}}", schedule_id).replace(
        "{{.timestamp}}", str(datetime_to_ms(at))
    )
