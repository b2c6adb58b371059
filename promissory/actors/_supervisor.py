"""``Supervisor``: an actor that starts children, and restarts or gives them up, as OTP does.

A supervisor declares its flags as class attributes and its static children in ``children()``;
they are started in order when it is spawned or restarted. When a child ends, the supervisor
receives ``ChildExit`` in its mailbox and decides with ``plan_exit`` (OTP's rules, see
``_strategy``). A decision that only restarts children is written in the transaction that
settles the exit, with the moved intensity window and each child's next incarnation: all or
nothing, so a crash before it leaves nothing to finish and the exit is decided afresh. Any
other decision (escalate, shut down, bounce, remove) keeps the plan and each action as
journaled steps, so a crash in the middle finishes the job on replay. The restart history
(the intensity window) is part of the supervisor's state in the store, so a crash loop that
spans process restarts still counts.

Dynamic children are managed with messages, answered with OTP's results: ``StartChild``,
``TerminateChild``, ``RestartChild``, ``DeleteChild``, ``WhichChildren``, ``CountChildren``
(``SupervisorRef`` wraps them as methods).

Example:
    >>> class Team(Supervisor):
    ...     strategy = Strategy.ONE_FOR_ALL
    ...     intensity, period = 3, 10.0
    ...     def children(self):
    ...         return [child(Researcher, id="a"), child(Writer, id="w", restart="transient")]

"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import msgspec.structs

from .._crashpoints import reached
from ..errors import EscalationError, InvalidDefinitionError, InvalidInputError
from ..store import (
    DECISION_BITS,
    ActorRecord,
    ActorStatus,
    TakenUp,
    bounce_op,
    encode,
    revive_op,
    spawn_op,
)
from ._actor import DurableActor
from ._children import (
    ChildDef,
    ChildInfo,
    ChildResult,
    CountChildren,
    Counts,
    DeleteChild,
    RestartChild,
    StartChild,
    SupervisorStarted,
    TerminateChild,
    WhichChildren,
)
from ._context import Context
from ._handlers import handler
from ._messages import start_message
from ._rows import child_view, end_child, spec_of
from ._signals import ChildExit
from ._spec import Exit, Restart
from ._strategy import (
    Action,
    AutoShutdown,
    Bounce,
    Escalate,
    Remove,
    Revive,
    ShutDown,
    Strategy,
    needs_siblings,
    plan_exit,
)

__all__ = ["Supervisor"]

log = logging.getLogger("promissory.actors")

_UNREAD: Any = object()


class SupervisorState(msgspec.Struct, kw_only=True):
    """What a supervisor keeps: the times of its recent restarts (the intensity window)."""

    history: list[float] = []
    started: int = 0


class Supervisor(DurableActor[SupervisorState]):
    """An actor that supervises children with OTP's strategies (see the module docstring).

    Attributes:
        strategy: ``one_for_one`` (default), ``one_for_all``, ``rest_for_one`` or
            ``simple_one_for_one`` (a pool: ``children()`` gives its one child spec, and
            ``start_child`` starts members from it, by id).
        intensity: restarts allowed within ``period`` seconds (default 1 in 5, as OTP).
        auto_shutdown: ``never`` (default), ``any_significant`` or ``all_significant``.

    """

    supervises: ClassVar[bool] = True
    _read_ahead: dict[str, ActorRecord] | None = None
    """Rows of children whose exits wait in the mailbox, read with the exit before them
    (see ``_failed``)."""
    _ahead_at = -1
    """The activation's handler count when ``_read_ahead`` was last read or used."""
    _decision: int | None = None
    """The number of the decision the step being run applies (see ``DECISION_BITS``)."""
    strategy: ClassVar[Strategy] = Strategy.ONE_FOR_ONE
    intensity: ClassVar[int] = 1
    period: ClassVar[float] = 5.0
    auto_shutdown: ClassVar[AutoShutdown] = AutoShutdown.NEVER

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.intensity, int) or cls.intensity < 0:
            raise InvalidDefinitionError(f"{cls.__qualname__}.intensity must be an int >= 0")
        if not cls.period > 0:
            raise InvalidDefinitionError(f"{cls.__qualname__}.period must be > 0 seconds")
        cls.strategy = Strategy(cls.strategy)
        cls.auto_shutdown = AutoShutdown(cls.auto_shutdown)

    def children(self) -> Sequence[ChildDef]:
        """The static children, in start order (none by default)."""
        return ()

    @classmethod
    def start_message(cls) -> Any:
        """The message each new incarnation of a supervisor is sent: start the children."""
        return SupervisorStarted()

    # -- starting ----------------------------------------------------------------------------

    @handler
    def started(self, ctx: Context, msg: SupervisorStarted) -> None:
        """Start the static children in order, and bring back the dynamic ones."""
        static = list(self.children())
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            self._template()  # checked at start, as OTP checks its child spec list
            static = []  # the one spec is the pool's template, not a child to start
        restarting = self.state.started > 0
        base = ctx.message.seq << DECISION_BITS
        if restarting:
            # A supervisor's restart restarts its subtree (as OTP's does): its children that
            # are still running are stopped, in reverse start order, then started again.
            self._decision = base
            ctx.step(self._bounce_children, name="stop_children")
        for i, spec in enumerate(static, 1):
            self._decision = base | i
            ctx.step(self._ensure_child, spec, restarting, name="start_child")
        self._decision = base | ((1 << DECISION_BITS) - 1)
        ctx.step(self._revive_dynamic, [s.id for s in static], name="revive_children")
        # Each incarnation starts with a fresh intensity window, as in OTP.
        self.state = SupervisorState(history=[], started=self.state.started + 1)

    def _bounce_children(self) -> int:
        store = self._activation.store
        host = self._activation.host
        bounced = 0
        for record in reversed(self._child_records()):
            if record.status is ActorStatus.RUNNING:
                host.shutdown_activation(record.id, spec_of(record).shutdown)
                store.execute(bounce_op(record.id, self._decision, host.home_for(record.kind)))
                reached("actor.bounced", record.id)
                bounced += 1
        return bounced

    def _ensure_child(self, spec: ChildDef, restarting: bool = False) -> str:
        self._check_spec(spec)
        actor_id = f"{self.id}/{spec.id}"
        store = self._activation.store
        host = self._activation.host
        child_class = host.resolve_class(spec.kind)
        record, created, _ = store.execute(
            spawn_op(
                actor_id,
                parent=self.id,
                kind=spec.kind,
                spec=encode(spec.spec),
                state=spec.state_json,
                start=start_message(child_class),
                supervisor=child_class.supervises,
                node=host.home_for(spec.kind),
            )
        )
        if created:
            host.spawned(actor_id, spec.kind)
        elif record.status is not ActorStatus.RUNNING or restarting:
            self._revive(actor_id, spec.kind, from_stopped=True)
        return actor_id

    def _revive(
        self, actor_id: str, kind: str, *, delay: float | None = None, from_stopped: bool = False
    ) -> bool:
        """Start a child's next incarnation (sending a supervisor child its start message),
        once per decision: a replay of the step that did it (after a kill) changes nothing.
        """
        host = self._activation.host
        start = start_message(host.resolve_class(kind))
        decision = self._decision
        revived = self._activation.store.execute(
            revive_op(
                actor_id,
                delay=delay,
                from_stopped=from_stopped,
                start=start,
                decision=decision,
                node=host.home_for(kind),
                take=True,
            )
        )
        if revived is None and decision is not None:
            current = self._child(actor_id)
            if current is not None and (current.decision or -1) >= decision:
                host.restarted(current)  # revived by this decision before the kill: go on
                return True
        if revived is not None:
            self._restarted(actor_id, delay, revived)
        return revived is not None

    def _check_spec(self, spec: ChildDef) -> None:
        # OTP refuses these child specs; so do we, at start.
        if spec.spec.significant and self.auto_shutdown is AutoShutdown.NEVER:
            raise InvalidInputError(
                f"child {spec.id!r} is significant but {type(self).__qualname__}'s auto_shutdown "
                "is never"
            )
        if spec.spec.significant and self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            raise InvalidInputError("a simple_one_for_one supervisor has no significant children")

    def _revive_dynamic(self, static: list[str]) -> int:
        # Unlike OTP, dynamic children outlive a restart of their supervisor: bring back every
        # one that is not temporary.
        revived = 0
        for record in self._child_records():
            local = record.id.removeprefix(self.id + "/")
            if local in static or record.status is ActorStatus.RUNNING:
                continue
            if spec_of(record).restart is Restart.TEMPORARY:
                continue
            if self._revive(record.id, record.kind, from_stopped=True):
                revived += 1
        return revived

    # -- a child ended -------------------------------------------------------------------------

    @handler
    def child_exit(self, ctx: Context, msg: ChildExit) -> None:
        """Apply OTP's rules to a child's exit."""
        if not len(ctx._run.journal) and self._decide_at_settle(ctx, msg):
            return
        if self._read_ahead:
            self._read_ahead.clear()  # decided step by step: any child may be written
        plan = ctx.step(self._plan, msg, name="plan")
        if plan is None:
            return  # a stale exit (an older epoch): it was dealt with already
        actions = msgspec.convert(plan["actions"], list[Action])
        base = ctx.message.seq << DECISION_BITS
        for i, action in enumerate(actions):
            if isinstance(action, Escalate):
                ctx.stop(Exit.ESCALATED, action.reason)
                break
            if isinstance(action, ShutDown):
                ctx.stop(Exit.SHUTDOWN, action.reason)
                break
            # The action's number: applied once (see DECISION_BITS), and until a restart in
            # the plan is applied, no node activates that child (``PENDING_RESTART``).
            self._decision = base | i
            ctx.step(self._apply, action, msg, name=f"apply:{type(action).__name__.lower()}")
        self.state = SupervisorState(history=plan["history"], started=self.state.started)

    def _decide_at_settle(self, ctx: Context, msg: ChildExit) -> bool:
        """A decision that only restarts children is written with the exit's settle, in one
        transaction (the exit handled, the intensity window moved on, each child's next
        incarnation): no step is kept, since a crash before that commit leaves nothing of it
        and the exit is decided afresh. Returns ``False`` for any other decision (escalate,
        shut down, bounce, remove), made step by step.
        """
        failed = self._failed(ctx, msg)
        plan = self._plan(msg, failed)
        if plan is None:
            return True  # a stale exit: nothing to do
        actions = msgspec.convert(plan["actions"], list[Action])
        ahead = self._read_ahead or {}
        if not actions or not all(isinstance(a, Revive) for a in actions):
            return False
        host = self._activation.host
        base = ctx.message.seq << DECISION_BITS
        for i, action in enumerate(actions):
            assert isinstance(action, Revive)
            ahead.pop(action.child, None)  # written with this settle: read again if need be
            kind = failed.kind if failed is not None and failed.id == action.child else None
            kind = kind or self._kind_of(action.child)
            if kind is None:
                return False
            op = revive_op(
                action.child,
                delay=action.delay,
                start=start_message(host.resolve_class(kind)),
                decision=base | i,
                node=host.home_for(kind),
                with_settle=ctx.message_id,
                take=True,
            )
            ctx._run.settle_with(
                op, functools.partial(self._revived, action.child, action.delay, base | i)
            )
        self.state = SupervisorState(history=plan["history"], started=self.state.started)
        return True

    def _failed(self, ctx: Context, msg: ChildExit) -> ActorRecord | None:
        """The row of the child whose exit is decided, as it stands since the exit was
        recorded. Many children crashing at once leave their exits back to back in the
        mailbox: the rows of their children are read with this one, in one query, and each
        is used for its own exit, once, and only by the handler run right after the exit
        that read or used the rows before it (another message handled in between, one that
        came late with an earlier seq say, drops them); a decision that writes a child
        otherwise than with its settle, or revives it, drops what was read of it.
        """
        ahead = self._read_ahead
        if ahead is None:
            ahead = self._read_ahead = {}
        handled, self._ahead_at = self._ahead_at, self._activation.handled
        if handled == self._ahead_at - 1 and msg.child in ahead:
            return ahead.pop(msg.child)  # the exit before this one read it, or used its own
        ahead.clear()
        rows: dict[str, ActorRecord] = self._activation.store.exited_children(
            self.id, msg.child, ctx.message.seq
        )
        failed = rows.pop(msg.child, None)
        ahead.update(rows)
        return failed if failed is not None and failed.parent == self.id else None

    def _revived(self, actor_id: str, delay: float | None, decision: int, revived: Any) -> None:
        if isinstance(revived, BaseException):
            log.warning("supervisor %s could not restart %s: %r", self.id, actor_id, revived)
            return
        if revived is None:
            # Nothing revived now: ending with its tree, or revived by this very decision in
            # a commit whose answer was lost (the writer read it back): then activate it.
            current = self._child(actor_id)
            if (
                current is not None
                and current.status in (ActorStatus.RUNNING, ActorStatus.RESTARTING)
                and (current.decision if current.decision is not None else -1) >= decision
            ):
                self._activation.host.restarted(current)
            return
        self._restarted(actor_id, delay, revived)

    def _restarted(self, actor_id: str, delay: float | None, revived: TakenUp) -> None:
        """A revive of this supervisor's made the child's next incarnation: activate it."""
        reached("actor.revived", actor_id)
        log.info(
            "supervisor %s restarts child %s (restart %d%s)",
            self.id,
            actor_id,
            revived.record.restarts,
            f", in {delay:.3f} s" if delay else "",
        )
        self._activation.host.restarted(revived)

    def _plan(self, msg: ChildExit, failed: Any = _UNREAD) -> dict[str, Any] | None:
        if failed is _UNREAD:
            failed = self._child(msg.child)
        if failed is None or failed.epoch != msg.epoch:
            return None
        now = msg.at if msg.at is not None else self._activation.store.now()
        history = list(self.state.history)
        # A one_for_one restart within the intensity concerns the failed child alone: a
        # supervisor of thousands then reads one row per restart, not all of them.
        siblings = needs_siblings(
            strategy=self.strategy,
            restart=spec_of(failed).restart,
            exit=msg.exit,
            history=history,
            now=now,
            intensity=self.intensity,
            period=self.period,
        )
        records = self._child_records() if siblings else [failed]
        views = [
            child_view(r, now)
            for r in records
            if r.status is not ActorStatus.STOPPED or r.id == msg.child
        ]
        actions, history = plan_exit(
            strategy=self.strategy,
            intensity=self.intensity,
            period=self.period,
            auto_shutdown=self.auto_shutdown,
            children=views,
            child=msg.child,
            exit=msg.exit,
            history=history,
            now=now,
        )
        return {"actions": msgspec.to_builtins(actions), "history": history}

    def _apply(self, action: Action, exit: ChildExit) -> bool:
        store = self._activation.store
        host = self._activation.host
        if isinstance(action, Bounce):
            host.shutdown_activation(action.child, action.shutdown)
            home = self._home_of(action.child)
            bounced = store.execute(bounce_op(action.child, self._decision, home)) is not None
            reached("actor.bounced", action.child)
            return bounced
        if isinstance(action, Revive):
            kind = self._kind_of(action.child)
            return kind is not None and self._revive(action.child, kind, delay=action.delay)
        if isinstance(action, Remove):
            host.end_children(action.child)  # a child supervisor's workers first, as in OTP
            host.shutdown_activation(action.child, action.shutdown)
            error = exit.error if action.child == exit.child else None
            end_child(store, action.child, action.exit, error, delete=action.delete)
            host.forget(action.child)
            return True
        raise TypeError(f"not an action to apply: {action!r}")

    def _home_of(self, actor_id: str) -> str | None:
        kind = self._kind_of(actor_id)
        return self._activation.host.home_for(kind) if kind is not None else None

    def _kind_of(self, actor_id: str) -> str | None:
        # One row: a restart under a supervisor of thousands reads no sibling.
        record = self._child(actor_id)
        return record.kind if record is not None else None

    def _child_records(self) -> list[ActorRecord]:
        children: list[ActorRecord] = self._activation.store.children_of(self.id)
        return children

    # -- dynamic children ----------------------------------------------------------------------

    @handler
    def start_child(self, ctx: Context, msg: StartChild) -> ChildResult:
        """Start a dynamic child: ``already_started`` / ``already_present`` if its id is taken."""
        result = ctx.step(self._start_child, msg.child, name="start_child")
        return msgspec.convert(result, ChildResult)

    def _template(self) -> ChildDef:
        """A ``simple_one_for_one`` pool's one child spec, which every member is started from."""
        specs = list(self.children())
        if len(specs) != 1:
            raise EscalationError(
                f"{type(self).__qualname__} is a simple_one_for_one supervisor: children() "
                f"must return exactly one child spec (the pool's), not {len(specs)}"
            )
        self._check_spec(specs[0])
        return specs[0]

    def _start_child(self, spec: ChildDef) -> ChildResult:
        if self.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            template = self._template()
            if spec.kind and spec.kind != template.kind:
                return ChildResult(
                    ok=False,
                    error=f"simple_one_for_one: members are started from the pool's child spec "
                    f"({template.kind}), not {spec.kind}",
                )
            # OTP appends the call's arguments to the spec's; here the member gets its own id
            # and, if given, its own initial state.
            state = spec.state if spec.state_json is not None else template.state
            spec = msgspec.structs.replace(template, id=spec.id, state=state)
        elif not spec.kind:
            return ChildResult(
                ok=False, error=f"a {self.strategy.value} supervisor needs a child spec to start"
            )
        try:
            self._check_spec(spec)
        except InvalidInputError as exc:
            return ChildResult(ok=False, error=str(exc))
        actor_id = f"{self.id}/{spec.id}"
        child_class = self._activation.host.resolve_class(spec.kind)
        record, created, _ = self._activation.store.execute(
            spawn_op(
                actor_id,
                parent=self.id,
                kind=spec.kind,
                spec=encode(spec.spec),
                state=spec.state_json,
                start=start_message(child_class),
                revive=False,
                supervisor=child_class.supervises,
                node=self._activation.host.home_for(spec.kind),
            )
        )
        if created:
            self._activation.host.spawned(actor_id, spec.kind)
            return ChildResult(ok=True, actor=actor_id)
        if record.status is ActorStatus.RUNNING:
            return ChildResult(ok=False, error="already_started", actor=actor_id)
        return ChildResult(ok=False, error="already_present", actor=actor_id)

    @handler
    def terminate_child(self, ctx: Context, msg: TerminateChild) -> ChildResult:
        """Stop a child, keeping its spec (a temporary child's spec goes)."""
        return msgspec.convert(
            ctx.step(self._terminate, msg.id, name="terminate_child"), ChildResult
        )

    def _terminate(self, id: str) -> ChildResult:
        record = self._child(id)
        if record is None:
            return ChildResult(ok=False, error="not_found")
        spec = spec_of(record)
        host = self._activation.host
        host.end_children(record.id)  # a child supervisor's workers first, as in OTP
        host.shutdown_activation(record.id, spec.shutdown)
        end_child(
            self._activation.store,
            record.id,
            Exit.SHUTDOWN,
            None,
            delete=spec.restart is Restart.TEMPORARY,
        )
        host.forget(record.id)
        return ChildResult(ok=True, actor=record.id)

    @handler
    def restart_child(self, ctx: Context, msg: RestartChild) -> ChildResult:
        """Start a terminated child again: ``running`` / ``restarting`` if it is not stopped."""
        self._decision = ctx.message.seq << DECISION_BITS
        return msgspec.convert(ctx.step(self._restart, msg.id, name="restart_child"), ChildResult)

    def _stopped_child(self, id: str) -> tuple[ActorRecord | None, ChildResult | None]:
        """A child that is stopped, or OTP's error for why it cannot be used as one."""
        record = self._child(id)
        if record is None:
            return None, ChildResult(ok=False, error="not_found")
        if record.status is ActorStatus.RUNNING:
            return None, ChildResult(ok=False, error="running", actor=record.id)
        if record.status is ActorStatus.RESTARTING:
            return None, ChildResult(ok=False, error="restarting", actor=record.id)
        return record, None

    def _restart(self, id: str) -> ChildResult:
        record, refused = self._stopped_child(id)
        if record is None:
            assert refused is not None
            return refused
        self._revive(record.id, record.kind, from_stopped=True)
        return ChildResult(ok=True, actor=record.id)

    @handler
    def delete_child(self, ctx: Context, msg: DeleteChild) -> ChildResult:
        """Forget a terminated child: ``running`` / ``restarting`` if it is not stopped."""
        return msgspec.convert(ctx.step(self._delete, msg.id, name="delete_child"), ChildResult)

    def _delete(self, id: str) -> ChildResult:
        record, refused = self._stopped_child(id)
        if record is None:
            assert refused is not None
            return msgspec.structs.replace(refused, actor=None)
        self._activation.store.delete_ended_actor(record.id)
        return ChildResult(ok=True)

    @handler
    def which_children(self, ctx: Context, msg: WhichChildren) -> list[ChildInfo]:
        """The children in start order, with status and restart count."""
        host = self._activation.host
        out = []
        for record in self._child_records():
            supervises = record.supervisor
            if supervises is None:  # a row from before the column: the class tells
                cls = _class_or_none(host, record.kind)
                supervises = cls is not None and issubclass(cls, Supervisor)
            out.append(
                ChildInfo(
                    id=record.id.removeprefix(self.id + "/"),
                    actor=record.id,
                    kind=record.kind,
                    status=record.status.value,
                    supervisor=supervises,
                    restarts=record.restarts,
                    restart=spec_of(record).restart,
                )
            )
        return out

    @handler
    def count_children(self, ctx: Context, msg: CountChildren) -> Counts:
        """How many children: specs kept, running, and supervisors and workers among the specs
        (as OTP counts them).
        """
        children = self.which_children(ctx, WhichChildren())
        supervisors = sum(1 for c in children if c.supervisor)
        return Counts(
            specs=len(children),
            active=sum(1 for c in children if c.status == "running"),
            supervisors=supervisors,
            workers=len(children) - supervisors,
        )

    def _child(self, id: str) -> ActorRecord | None:
        actor_id = id if id.startswith(self.id + "/") else f"{self.id}/{id}"
        record = self._activation.store.actor_row(actor_id)
        return record if record is not None and record.parent == self.id else None


def _class_or_none(host: Any, kind: str) -> type | None:
    try:
        cls: type = host.resolve_class(kind)
        return cls
    except Exception as exc:
        log.warning("promissory: the class %s cannot be loaded here (%r)", kind, exc)
        return None
