"""The durable-promise protocol's rules, as plain functions: what a timeout settles to, which
promises are external, addresses, what a create may ask for, the task fences, cron."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from promissory.errors import ProtocolError
from promissory.store import PromiseState
from promissory.store._rpc_rules import (
    NEVER_MS,
    TaskState,
    check_acquire,
    check_create,
    check_lease,
    datetime_to_ms,
    extends,
    is_external,
    ms_to_datetime,
    next_run,
    origin_of,
    parse_cron,
    route_of,
    schedule_promise_id,
    timeout_state,
)


@pytest.mark.parametrize(
    ("tags", "state"),
    [
        ({}, PromiseState.REJECTED_TIMEDOUT),
        ({"resonate:timer": "true"}, PromiseState.RESOLVED),
        ({"resonate:timer": "false"}, PromiseState.REJECTED_TIMEDOUT),
    ],
)
def test_timeout_always_wins_and_a_timer_resolves(
    tags: dict[str, str], state: PromiseState
) -> None:
    assert timeout_state(tags) is state


@pytest.mark.parametrize(
    ("tags", "external"),
    [
        ({}, False),
        ({"resonate:scope": "local"}, False),
        ({"resonate:scope": "global"}, True),
        ({"resonate:external": "true"}, True),
        ({"resonate:target": "poll://any@g"}, True),
        ({"resonate:timer": "true"}, True),
    ],
)
def test_only_external_promises_are_armed(tags: dict[str, str], external: bool) -> None:
    assert is_external(tags) is external


@pytest.mark.parametrize(
    ("address", "route"),
    [
        ("poll://uni@g/p1", "uni:g/p1"),
        ("poll://any@g", "any:g"),
        ("poll://any@g/p1", "any:g"),
        ("http://example.com/hook", "http:http://example.com/hook"),
        ("https://example.com", "http:https://example.com"),
    ],
)
def test_an_address_routes_to_one_worker_or_any_of_a_group(address: str, route: str) -> None:
    assert route_of(address) == route


@pytest.mark.parametrize(
    "address", ["", "poll://", "poll://uni@g", "poll://uni@g/a/b", "poll://x@g", "nats://a", "g"]
)
def test_a_bad_address_is_a_400(address: str) -> None:
    with pytest.raises(ProtocolError, match="invalid address") as caught:
        route_of(address)
    assert caught.value.status == 400


def test_ids_extend_their_lineage() -> None:
    assert origin_of("root:1.2") == "root" and origin_of("root") == "root"
    assert extends("root:1.2", "root") and extends("root:1.2", "root:1")
    assert extends("root", "root") and not extends("rooted:1", "root")
    assert not extends("root:12", "root:1")


@pytest.mark.parametrize(
    ("id", "tags", "words"),
    [
        ("", {}, "must not be empty"),
        ("a\x00", {}, "null byte"),
        ("a", {"k": "v\x00"}, "null byte"),
        ("x:1", {"resonate:origin": "y"}, "does not extend"),
        ("x:1", {"resonate:parent": "x:2"}, "does not extend"),
        ("a:b", {"resonate:origin": "a:b"}, "must not contain ':'"),
        ("a", {"resonate:delay": "soon", "resonate:target": "poll://any@g"}, "not an integer"),
        ("a", {"resonate:delay": "1"}, "needs a resonate:target"),
        ("a", {"resonate:delay": "100", "resonate:target": "poll://any@g"}, "before timeoutAt"),
        ("a", {"resonate:target": "x"}, "invalid address"),
    ],
)
def test_a_create_the_protocol_refuses_is_a_400_naming_why(
    id: str, tags: dict[str, str], words: str
) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        check_create(id, 100, tags)
    assert caught.value.status == 400


def test_a_create_the_protocol_allows() -> None:
    check_create("root:1.2", 100, {"resonate:origin": "root", "resonate:parent": "root:1"})
    check_create("a", 100, {"resonate:delay": "99", "resonate:target": "poll://any@g"})


@pytest.mark.parametrize("state", list(TaskState))
@pytest.mark.parametrize("asked", [3, 4])
def test_a_task_is_fenced_by_its_state_and_version(state: TaskState, asked: int) -> None:
    if state is TaskState.ACQUIRED and asked == 3:
        check_lease(state, 3, asked, "task.fence")
        return
    with pytest.raises(ProtocolError) as caught:
        check_lease(state, 3, asked, "task.fence")
    assert caught.value.status == 409


@pytest.mark.parametrize("state", list(TaskState))
@pytest.mark.parametrize("promise", [PromiseState.PENDING, PromiseState.RESOLVED])
def test_only_a_pending_task_of_a_pending_promise_is_acquired(
    state: TaskState, promise: PromiseState
) -> None:
    if state is TaskState.PENDING and promise is PromiseState.PENDING:
        check_acquire(state, 0, 0, promise)
        with pytest.raises(ProtocolError, match="version"):
            check_acquire(state, 0, 1, promise)
        return
    with pytest.raises(ProtocolError) as caught:
        check_acquire(state, 0, 0, promise)
    assert caught.value.status == 409


def test_timestamps_round_trip_in_milliseconds() -> None:
    for ms in (0, 1, 1_764_000_000_123, 253402300799999):
        at = ms_to_datetime(ms)
        assert at is not None and datetime_to_ms(at) == ms
    assert ms_to_datetime(NEVER_MS) is None and datetime_to_ms(None) == NEVER_MS


def test_cron_fields_and_the_next_run() -> None:
    minute, hour, day, month, weekday = parse_cron("*/15 9-17 1,15 * 1-5")
    assert sorted(minute) == [0, 15, 30, 45] and sorted(hour) == list(range(9, 18))
    assert sorted(day) == [1, 15] and len(month) == 12 and sorted(weekday) == [1, 2, 3, 4, 5]
    assert parse_cron("0 0 * * 7")[4] == frozenset({0})
    at = datetime(2026, 1, 1, 10, 7, 30, tzinfo=UTC)  # a Thursday
    assert next_run("*/15 * * * *", at) == datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    assert next_run("0 0 * * 0", at) == datetime(2026, 1, 4, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "bad minute"),
        ("* 24 * * *", "bad hour"),
        ("* * 0 * *", "bad day of month"),
        ("*/0 * * * *", "bad minute"),
        ("a * * * *", "bad minute"),
    ],
)
def test_a_bad_cron_is_a_400_naming_the_field(cron: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_cron(cron)


def test_a_schedule_names_its_promises_by_template() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule_promise_id("{{.id}}.{{.timestamp}}", "nightly", at) == (
        f"nightly.{datetime_to_ms(at)}"
    )


def test_a_cron_that_never_fires_is_a_400_and_said_at_once() -> None:
    with pytest.raises(ProtocolError, match="never fires"):
        next_run("0 0 30 2 *", datetime(2026, 1, 1, tzinfo=UTC))
