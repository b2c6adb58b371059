"""Schedules: defining them, and the service that fires them on every node.

Each node runs a ``Scheduler`` thread for the schedules whose run type it hosts. It sleeps
until the earliest next firing (by the database's clock; at most ``poll`` seconds, and woken
at once when a schedule is made or resumed in this process), then, for each due schedule:
decides the firing (``plan_firing``: on time, or missed and skipped or made once), claims it
in the row, starts the run with the id ``{schedule id}/{firing time}``, and moves the row on.
The run id is the idempotency key, and the claim passes to a live node only when its holder's
lease is gone: with any number of nodes, and across kills, each firing's run is created once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidInputError, ScheduleNotFoundError, StoreError
from ..store import (
    OutageLog,
    Schedule,
    Store,
    advance_schedule,
    check_id,
    claim_firing,
    delete_schedule,
    due_schedules,
    encode,
    find_schedule,
    list_schedules,
    put_schedule,
    seconds_to_next_firing,
    set_schedule_paused,
)
from ._cron import Missed, check_cron, check_timezone, next_after, plan_firing, run_id_for

log = logging.getLogger("promissory.runtime")

__all__ = [
    "ScheduleMethods",
    "Scheduler",
    "define_schedule",
    "pause_schedule",
    "resume_schedule",
]

Start = Callable[[str, Any, str], object]
"""``start(kind, task, run_id)``: start a run of type ``kind`` with ``task``, id ``run_id``
(a no-op if that run exists)."""


def define_schedule(
    store: Store,
    id: str,
    *,
    cron: str,
    kind: str,
    task: Any,
    timezone: str,
    missed: Missed | str,
    grace: float,
) -> Schedule:
    """Check a schedule's definition and keep it (create it, or change the one of this id).

    Raises:
        InvalidInputError: the id, the expression, the zone, the policy, the grace or the
            task is not usable (nothing is written).

    """
    check_id(id, what="schedule id", limit=400)
    expression = check_cron(cron)
    check_timezone(timezone)
    try:
        policy = Missed(missed)
    except ValueError:
        raise InvalidInputError(
            f"missed must be 'skip' or 'once', not {missed!r}: what happens to firings "
            "missed while no node ran"
        ) from None
    if not (isinstance(grace, int | float) and grace >= 0):
        raise InvalidInputError(f"grace must be ≥ 0 seconds, not {grace!r}")
    task_json = encode(task, what="the schedule's task")
    now = datetime.fromtimestamp(store.now(), UTC)
    return put_schedule(
        store,
        id=id,
        cron=expression,
        timezone=timezone,
        kind=kind,
        task_json=task_json,
        missed=policy.value,
        grace=float(grace),
        next_at=next_after(expression, timezone, now),
    )


def pause_schedule(store: Store, id: str) -> Schedule:
    """Pause the schedule ``id``: it makes no firing until resumed.

    Raises:
        ScheduleNotFoundError: no schedule has this id.

    """
    return set_schedule_paused(store, id, True)


def resume_schedule(store: Store, id: str) -> Schedule:
    """Resume the schedule ``id`` from now: firings that fell while it was paused are not made.

    Raises:
        ScheduleNotFoundError: no schedule has this id.

    """
    found = find_schedule(store, id)
    if found is None:
        raise ScheduleNotFoundError(f"no schedule has the id {id!r}")
    now = datetime.fromtimestamp(store.now(), UTC)
    return set_schedule_paused(store, id, False, next_after(found.cron, found.timezone, now))


class Scheduler:
    """Fires the due schedules of the run types one node hosts."""

    def __init__(
        self,
        store: Store,
        node_id: Callable[[], str],
        kinds: Callable[[], list[str]],
        start: Start,
        *,
        poll: float = 5.0,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._kinds = kinds
        self._start = start
        self._poll = poll
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._outage = OutageLog(log, "scheduler")
        self._thread = threading.Thread(target=self._run, name="promissory-schedules", daemon=True)
        self.fired = 0
        """Runs this node started for schedules."""

    def start(self) -> None:
        """Start firing (the first look is at once)."""
        self._thread.start()

    def kick(self) -> None:
        """Look again now (a schedule was made or resumed)."""
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the firing in progress."""
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.clear()
            delay = self._poll
            try:
                self.tick()
                left = seconds_to_next_firing(self._store, self._kinds())
                if left is not None:
                    delay = max(0.0, min(left, self._poll))
                self._outage.ok()
            except StoreError as exc:
                if self._closed.is_set():
                    return
                self._outage.failed(exc, "looking again every second")
                delay = 1.0
            except Exception:
                log.exception("promissory scheduler: a pass failed; trying again in 1 s")
                delay = 1.0
            # A hair late rather than early: due is by the database's clock.
            self._wake.wait(delay + 0.002)

    def tick(self) -> int:
        """Make every firing that is due now; return how many runs were started."""
        started = 0
        while not self._closed.is_set():
            kinds = self._kinds()
            due, now = due_schedules(self._store, kinds, self._node_id())
            if not due or now is None:
                return started
            for schedule in due:
                if self._closed.is_set():
                    break
                started += self._fire(schedule, now)
        return started

    def _fire(self, schedule: Schedule, now: datetime) -> int:
        node = self._node_id()
        firing = plan_firing(
            schedule.cron,
            schedule.timezone,
            schedule.next_at,
            now,
            Missed(schedule.missed),
            schedule.grace,
        )
        if not claim_firing(self._store, schedule.id, schedule.next_at, node):
            return 0  # another node makes it (or the row changed)
        run_id = None
        if firing.fire_at is not None:
            run_id = run_id_for(schedule.id, firing.fire_at)
            try:
                self._start(schedule.kind, schedule.task, run_id)
            except StoreError:
                raise  # the claim stays this node's: the next pass starts the same run id
            except Exception:
                log.exception(
                    "schedule %s: starting run %s failed; this firing is not made",
                    schedule.id,
                    run_id,
                )
                run_id = None
        else:
            log.info(
                "schedule %s: firings from %s until %s were missed (no node ran it); skipped",
                schedule.id,
                schedule.next_at.isoformat(),
                firing.next_at.isoformat(),
            )
        advance_schedule(
            self._store,
            schedule.id,
            schedule.next_at,
            node,
            firing.next_at,
            firing.fire_at if run_id is not None else None,
            run_id,
        )
        if run_id is None:
            return 0
        self.fired += 1
        return 1


class ScheduleMethods:
    """``Runtime``'s schedule methods (it inherits them): define, list, pause, resume, delete."""

    scheduler: Scheduler

    def _store(self) -> Store:
        raise NotImplementedError  # Runtime's

    def _schedule_kind(self, runnable: Any) -> str:
        raise NotImplementedError  # Runtime's

    def schedule(
        self,
        id: str,
        *,
        cron: str,
        agent: Any,
        task: Any = None,
        timezone: str = "UTC",
        missed: Missed | str = Missed.ONCE,
        grace: float = 60.0,
    ) -> Schedule:
        """Run ``agent`` on ``task`` at every firing of ``cron``; return the kept schedule.

        Each firing is a run whose id is ``{id}/{firing time in UTC}``, made once whatever
        the number of nodes and restarts, by a node that hosts ``agent``. A firing later than
        ``grace`` seconds (no node ran) was missed: ``missed="once"`` (the default) makes one
        run for them all, at the latest of their times; ``"skip"`` makes none. Defining an id
        again changes its schedule (a pause is kept).

        Example:
            >>> rt.schedule("reports/daily", cron="0 7 * * *", agent=reporter,
            ...             task="Yesterday's sales", timezone="Europe/Paris")  # doctest: +SKIP

        Args:
            id: the schedule's id.
            cron: five fields (minute hour day month weekday), or six with seconds last.
            agent: what each firing runs (an ``Agent``, or an actor class or type whose class
                can ``launch(rt, input, id=)``).
            task: its input, as JSON.
            timezone: the IANA zone ``cron`` is read in.
            missed: ``"once"`` or ``"skip"``.
            grace: seconds late a firing is still made as usual.

        Raises:
            InvalidInputError: a bad id, expression, zone, policy, grace or task (nothing is
                written).
            InvalidDefinitionError: ``agent`` cannot be started by a schedule.

        """
        store = self._store()
        schedule = define_schedule(
            store,
            id,
            cron=cron,
            kind=self._schedule_kind(agent),
            task=task,
            timezone=timezone,
            missed=missed,
            grace=grace,
        )
        self.scheduler.kick()
        return schedule

    def schedules(self, prefix: str = "") -> list[Schedule]:
        """Every schedule (whose id starts with ``prefix``), by id."""
        return list_schedules(self._store(), prefix)

    def pause_schedule(self, id: str) -> Schedule:
        """Pause the schedule ``id`` (``ScheduleNotFoundError`` if there is none)."""
        return pause_schedule(self._store(), id)

    def resume_schedule(self, id: str) -> Schedule:
        """Resume the schedule ``id`` from now (``ScheduleNotFoundError`` if there is none)."""
        schedule = resume_schedule(self._store(), id)
        self.scheduler.kick()
        return schedule

    def delete_schedule(self, id: str) -> bool:
        """Delete the schedule ``id`` (its runs stay); whether there was one."""
        return delete_schedule(self._store(), id)
