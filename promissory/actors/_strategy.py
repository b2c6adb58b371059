"""What a supervisor does when a child exits: OTP's rules, as a pure function.

``plan_exit`` takes the supervisor's flags, its children in start order, the exit, the
restart history and the time, and returns the actions to take and the history to keep. It
reads nothing and writes nothing, so every case of OTP's table can be tested directly; the
``Supervisor`` actor applies the actions as journaled steps.

Differences from OTP, chosen for durable actors:

* Escalation has its own exit kind (``Exit.ESCALATED``), so a transient supervisor whose
  children failed too often is restarted by its parent (OTP exits with ``shutdown``, which a
  transient parent spec treats as normal).
* Children are created in start order, but a child's start message is not awaited before the
  next one is created (OTP waits for each child's ``init`` to return): at a start and at a
  ``one_for_all`` or ``rest_for_one`` restart, the children's first work runs concurrently.
  Their mailboxes are durable, so a message to a sibling not yet started waits for it.
* Restarting a child keeps its mailbox and its state snapshot: the message it failed on is
  handled again by the new incarnation. A child that is given up has its pending messages
  rejected with its failure, so no caller waits on it forever.
* Dynamic children are rows in the store; they survive a restart of their supervisor and of
  the process (OTP forgets them).
* A child stopped with ``terminate_child`` stays stopped when its siblings are restarted by
  ``one_for_all`` or ``rest_for_one`` (OTP restarts it with them); it comes back with
  ``restart_child`` or a restart of the supervisor.
* A ``simple_one_for_one`` pool's one child spec (``children()`` returns exactly one) is the
  template of its members; ``start_child(id, state=…)`` gives a member its own id and initial
  state where OTP appends arguments to the spec's start function. ``terminate_child`` keeps the
  member's row (stopped, so ``restart_child`` can bring it back) where OTP removes it, and
  members are stopped one after another rather than all at once.
"""

from __future__ import annotations

import enum

import msgspec

from ._spec import Backoff, Exit, Restart, intensity_allows, should_restart

__all__ = ["AutoShutdown", "Strategy"]


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one fails."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped (in reverse start order) and all restarted."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and those started after it."""
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"
    """A dynamic pool of children of one spec, each restarted on its own."""


class AutoShutdown(enum.StrEnum):
    """When the normal end of significant children ends the supervisor (OTP 24+)."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class ChildView(msgspec.Struct, frozen=True, kw_only=True):
    """What planning needs to know of one child."""

    id: str
    restart: Restart
    significant: bool = False
    shutdown: float | None = 5.0
    backoff: Backoff | None = None
    alive: bool = True
    epoch: int = 0
    restarts: int = 0
    running_for: float | None = None
    """Seconds since its last (re)start, for a backoff's ``reset_after``."""


class Bounce(msgspec.Struct, frozen=True, tag="bounce"):
    """Stop a child's activation (within its shutdown time) and fence it; keep its mailbox."""

    child: str
    shutdown: float | None


class Revive(msgspec.Struct, frozen=True, tag="restart"):
    """Start a child's next incarnation, after ``delay`` seconds if given.

    Its stored tag stays ``"restart"`` (the word it had before ``Restart`` named the restart
    type): plans are kept as journaled step values, the JSON of each action is hashed into the
    fingerprint of the step that applies it, and the store's ``PENDING_RESTART`` matches the
    tag in SQL. A new tag would make a plan kept by an earlier version fail its replay.
    """

    child: str
    delay: float | None = None


class Remove(msgspec.Struct, frozen=True, tag="remove"):
    """End a child for good: reject its mailbox; ``delete`` its spec (temporary children)."""

    child: str
    exit: Exit
    delete: bool
    shutdown: float | None = 5.0


class Escalate(msgspec.Struct, frozen=True, tag="escalate"):
    """The supervisor itself fails, with the escalation exit, to its own parent."""

    reason: str


class ShutDown(msgspec.Struct, frozen=True, tag="shutdown"):
    """The supervisor stops normally (auto-shutdown after significant children ended)."""

    reason: str


Action = Bounce | Revive | Remove | Escalate | ShutDown


def plan_exit(
    *,
    strategy: Strategy,
    intensity: int,
    period: float,
    auto_shutdown: AutoShutdown,
    children: list[ChildView],
    child: str,
    exit: Exit,
    history: list[float],
    now: float,
) -> tuple[list[Action], list[float]]:
    """The actions after ``child`` exited with ``exit``, and the restart history to keep.

    ``children`` are in start order; ``child`` must be among them (callers drop stale exits).
    """
    index = next(i for i, c in enumerate(children) if c.id == child)
    failed = children[index]
    if not should_restart(failed.restart, exit):
        actions: list[Action] = [
            Remove(failed.id, exit, delete=failed.restart is Restart.TEMPORARY, shutdown=0.0)
        ]
        if failed.significant and _auto_shutdown(auto_shutdown, children, failed.id):
            actions.extend(_stop_all(children, exclude={failed.id}))
            actions.append(ShutDown(f"significant child {failed.id} ended"))
        return actions, history
    allowed, kept = intensity_allows(history, now, intensity, period)
    if not allowed:
        reason = (
            f"child {failed.id} failed ({exit.value}) more than {intensity} time(s) in {period} s"
        )
        return [*_stop_all(children, exclude=set()), Escalate(reason)], kept
    if strategy in (Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE):
        group = [failed]
    elif strategy is Strategy.ONE_FOR_ALL:
        group = [c for c in children if c.alive or c.id == failed.id]
    else:
        group = [c for c in children[index:] if c.alive or c.id == failed.id]
    actions = []
    others = [c for c in group if c.id != failed.id]
    for c in reversed(others):
        if c.restart is Restart.TEMPORARY:
            actions.append(Remove(c.id, Exit.SHUTDOWN, delete=True, shutdown=c.shutdown))
        else:
            actions.append(Bounce(c.id, c.shutdown))
    for c in group:
        if c.id != failed.id and c.restart is Restart.TEMPORARY:
            continue
        actions.append(Revive(c.id, _backoff(c)))
    return actions, kept


def needs_siblings(
    *,
    strategy: Strategy,
    restart: Restart,
    exit: Exit,
    history: list[float],
    now: float,
    intensity: int,
    period: float,
) -> bool:
    """Whether planning this exit needs the failed child's siblings: not for a one_for_one
    (or pool) restart within the intensity, which touches the failed child alone.
    """
    if strategy not in (Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE):
        return True
    if not should_restart(restart, exit):
        return True  # a significant child's end may shut the others down
    allowed, _ = intensity_allows(history, now, intensity, period)
    return not allowed  # an escalation stops them all


def _backoff(c: ChildView) -> float | None:
    if c.backoff is None:
        return None
    reset = c.backoff.reset_after
    if reset is not None and c.running_for is not None and c.running_for >= reset:
        return c.backoff.delay(1)
    return c.backoff.delay(c.restarts + 1)


def _stop_all(children: list[ChildView], exclude: set[str]) -> list[Action]:
    return [
        Remove(c.id, Exit.SHUTDOWN, delete=c.restart is Restart.TEMPORARY, shutdown=c.shutdown)
        for c in reversed(children)
        if c.alive and c.id not in exclude
    ]


def _auto_shutdown(mode: AutoShutdown, children: list[ChildView], ended: str) -> bool:
    if mode is AutoShutdown.NEVER:
        return False
    if mode is AutoShutdown.ANY_SIGNIFICANT:
        return True
    return not any(c.significant and c.alive for c in children if c.id != ended)
