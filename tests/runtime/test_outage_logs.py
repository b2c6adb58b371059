"""A database outage under a running node is told in a few clear lines, not tracebacks
(issue 14, item 14)."""

from __future__ import annotations

import logging
import time

import msgspec
import pytest

from promissory import Context, DurableActor, Runtime, handler
from tests.store.test_connection_loss import FlakyProxy


class Nap(msgspec.Struct):
    seconds: float


class Napper(DurableActor[None]):
    @handler
    def nap(self, ctx: Context, msg: Nap) -> str:
        ctx.sleep(msg.seconds)  # a timer row: the timer service sweeps for it
        return "rested"


@pytest.mark.timeout(90)
def test_an_outage_under_a_running_node_logs_one_line_per_part_and_no_traceback(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = FlakyProxy(dsn)
    caplog.set_level(logging.INFO)
    try:
        # Shorter than reconnect_timeout: store calls wait it out (a longer outage fails
        # them, which is another matter).
        with Runtime(proxy.dsn, reconnect_timeout=15.0) as rt:
            replies = [rt.spawn(Napper, id=f"n/{i}").ask(Nap(3.0)) for i in range(3)]
            caplog.clear()
            proxy.go_down()
            time.sleep(3.0)  # an outage of several lease checks and reads, by design
            proxy.come_back()
            assert [r.get(timeout=30) for r in replies] == ["rested"] * 3
    finally:
        proxy.close()

    shown = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = [f"{r.name}: {r.getMessage()}" for r in shown]
    assert all(r.exc_info is None for r in shown), text
    assert not any("discarding" in t or "error connecting" in t for t in text), text
    # Each part that met the outage says so once, and once that it is over, however many
    # connections and retries it took: the reads and the node's lease at least.
    parts: dict[str, list[str]] = {}
    for r in shown:
        parts.setdefault(r.getMessage().split(":", 1)[0], []).append(r.getMessage())
    assert {"promissory store"} <= set(parts), text
    assert any(part.startswith("promissory node ") for part in parts), text
    for part, lines in parts.items():
        assert len(lines) <= 2, (part, lines)
        if part.startswith("promissory node "):
            # The node's lease: lost once, and the node rejoins under a new id once.
            assert "lost its lease" in lines[0], (part, lines)
            assert all("rejoined the fleet" in line for line in lines[1:]), (part, lines)
            continue
        assert "answers again" not in lines[0], (part, lines)
        assert all("answers again" in line for line in lines[1:]), (part, lines)
    assert "answers again" in parts["promissory store"][-1], text


def test_a_read_that_began_before_the_outage_does_not_say_the_database_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from promissory.store._outage import OutageLog

    outage = OutageLog(logging.getLogger("promissory.store"), "store")
    began = time.monotonic()  # a read on a connection the outage has not reached yet
    outage.failed(ConnectionError("server closed the connection"))
    outage.ok(began)  # it finishes while the others fail: not a sign of anything
    outage.failed(ConnectionError("server closed the connection"))
    assert outage.down
    outage.ok(time.monotonic())  # one that began afterwards: the database is back
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("promissory store: ConnectionError: server closed")
    assert lines[1].startswith("promissory store: the database answers again")


def test_a_read_that_began_before_the_database_came_back_does_not_start_another_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from promissory.store._outage import OutageLog

    caplog.set_level(logging.DEBUG, logger="promissory.store")
    outage = OutageLog(logging.getLogger("promissory.store"), "store")
    outage.failed(ConnectionError("server closed the connection"))
    began = time.monotonic()  # handed a pooled connection the outage had cut
    outage.ok(time.monotonic())  # another read finds the database back
    outage.failed(ConnectionError("server closed the connection"), began=began)
    assert not outage.down  # a late failure of an old connection: not a new outage
    outage.failed(ConnectionError("server closed the connection"), began=time.monotonic())
    assert outage.down  # one that began afterwards is
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3, warnings  # lost, back, lost again; the stale one at debug
