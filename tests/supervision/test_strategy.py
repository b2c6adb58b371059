"""OTP's supervision rules as pure functions: ``should_restart``, ``intensity_allows``,
``plan_exit`` and ``Backoff``, case by case against supervisor.erl (reference/supervision.md §1).

Each test is named after the OTP case (or rule) it checks, and says the rule in one line.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest

from promissory.actors import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    Exit,
    Restart,
    Strategy,
    Supervisor,
    child,
)
from promissory.actors._spec import intensity_allows, should_restart
from promissory.actors._strategy import (
    Bounce,
    ChildView,
    Escalate,
    Remove,
    Revive,
    ShutDown,
    plan_exit,
)
from promissory.store._actors import PENDING_RESTART
from tests.supervision.actors import Worker

P, TR, TE = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
NOW = 1000.0


def view(id: str, restart: Restart = P, **kw: Any) -> ChildView:
    return ChildView(id=id, restart=restart, **kw)


def plan(
    children: list[ChildView],
    child: str,
    exit: Exit,
    *,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: int = 3,
    period: float = 5.0,
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER,
    history: list[float] | None = None,
    now: float = NOW,
) -> tuple[list[Any], list[float]]:
    return plan_exit(
        strategy=strategy,
        intensity=intensity,
        period=period,
        auto_shutdown=auto_shutdown,
        children=children,
        child=child,
        exit=exit,
        history=list(history or []),
        now=now,
    )


def kinds(actions: list[Any]) -> list[tuple[str, str]]:
    """Actions as (kind, child) pairs, in order; escalate/shutdown as (kind, "")."""
    out = []
    for a in actions:
        if isinstance(a, Bounce):
            out.append(("bounce", a.child))
        elif isinstance(a, Revive):
            out.append(("revive", a.child))
        elif isinstance(a, Remove):
            out.append(("remove", a.child))
        elif isinstance(a, Escalate):
            out.append(("escalate", ""))
        elif isinstance(a, ShutDown):
            out.append(("shutdown", ""))
    return out


# -- OTP's restart table (do_restart/3) ----------------------------------------------------------

TABLE = {
    (P, Exit.NORMAL): True,
    (P, Exit.SHUTDOWN): True,
    (P, Exit.ABNORMAL): True,
    (P, Exit.ESCALATED): True,
    (TR, Exit.NORMAL): False,
    (TR, Exit.SHUTDOWN): False,
    (TR, Exit.ABNORMAL): True,
    (TR, Exit.ESCALATED): True,
    (TE, Exit.NORMAL): False,
    (TE, Exit.SHUTDOWN): False,
    (TE, Exit.ABNORMAL): False,
    (TE, Exit.ESCALATED): False,
}


@pytest.mark.parametrize(("restart", "exit"), list(itertools.product(Restart, Exit)))
def test_restart_table(restart: Restart, exit: Exit) -> None:
    """should_restart is OTP's table: permanent always, transient on abnormal, temporary never."""
    assert should_restart(restart, exit) is TABLE[(restart, exit)]


def test_permanent_normal() -> None:
    """A permanent child that exits normally is restarted, and the restart is counted."""
    actions, history = plan([view("c1")], "c1", Exit.NORMAL)
    assert actions == [Revive("c1")]
    assert history == [NOW]


def test_permanent_shutdown() -> None:
    """A permanent child that exits with shutdown is restarted."""
    actions, history = plan([view("c1")], "c1", Exit.SHUTDOWN)
    assert actions == [Revive("c1")]
    assert history == [NOW]


def test_permanent_abnormal() -> None:
    """A permanent child that crashes is restarted."""
    actions, history = plan([view("c1")], "c1", Exit.ABNORMAL)
    assert actions == [Revive("c1")]
    assert history == [NOW]


def test_transient_normal() -> None:
    """A transient child that exits normally is not restarted; its spec is kept; no budget."""
    actions, history = plan([view("c1", TR)], "c1", Exit.NORMAL, history=[NOW - 1])
    assert kinds(actions) == [("remove", "c1")]
    (remove,) = actions
    assert remove.exit is Exit.NORMAL and remove.delete is False
    assert history == [NOW - 1]


def test_transient_shutdown() -> None:
    """A transient child that exits with shutdown is not restarted; its spec is kept."""
    actions, history = plan([view("c1", TR)], "c1", Exit.SHUTDOWN)
    assert kinds(actions) == [("remove", "c1")]
    assert actions[0].exit is Exit.SHUTDOWN and actions[0].delete is False
    assert history == []


def test_transient_abnormal() -> None:
    """A transient child that crashes is restarted."""
    actions, history = plan([view("c1", TR)], "c1", Exit.ABNORMAL)
    assert actions == [Revive("c1")]
    assert history == [NOW]


def test_transient_escalated() -> None:
    """Deviation: a transient supervisor that escalated is restarted (OTP exits with shutdown)."""
    actions, history = plan([view("sup", TR)], "sup", Exit.ESCALATED)
    assert actions == [Revive("sup")]
    assert history == [NOW]


def test_temporary_normal() -> None:
    """A temporary child that exits normally is removed, spec and all."""
    actions, _ = plan([view("c1", TE)], "c1", Exit.NORMAL)
    assert kinds(actions) == [("remove", "c1")] and actions[0].delete


def test_temporary_shutdown() -> None:
    """A temporary child that exits with shutdown is removed, spec and all."""
    actions, _ = plan([view("c1", TE)], "c1", Exit.SHUTDOWN)
    assert kinds(actions) == [("remove", "c1")] and actions[0].delete


def test_temporary_abnormal() -> None:
    """A temporary child that crashes is removed, spec and all, and costs no budget."""
    actions, history = plan([view("c1", TE)], "c1", Exit.ABNORMAL, intensity=0)
    assert kinds(actions) == [("remove", "c1")] and actions[0].delete
    assert history == []


# -- strategies --------------------------------------------------------------------------------


def test_one_for_one() -> None:
    """one_for_one: only the failed child is restarted; its siblings are left alone."""
    children = [view("c1"), view("c2"), view("c3")]
    actions, _ = plan(children, "c2", Exit.ABNORMAL)
    assert kinds(actions) == [("revive", "c2")]


def test_one_for_all() -> None:
    """one_for_all: others bounced in reverse start order, all revived in start order."""
    children = [view("c1"), view("c2", TR), view("c3"), view("c4")]
    actions, history = plan(children, "c2", Exit.ABNORMAL, strategy=Strategy.ONE_FOR_ALL)
    assert kinds(actions) == [
        ("bounce", "c4"),
        ("bounce", "c3"),
        ("bounce", "c1"),
        ("revive", "c1"),
        ("revive", "c2"),
        ("revive", "c3"),
        ("revive", "c4"),
    ]
    assert history == [NOW]


def test_one_for_all_bounce_uses_each_childs_shutdown() -> None:
    """A bounced sibling gets its own shutdown time (brutal kill 0, a timeout, or infinity)."""
    children = [view("c1", shutdown=None), view("c2"), view("c3", shutdown=0.0)]
    actions, _ = plan(children, "c2", Exit.ABNORMAL, strategy=Strategy.ONE_FOR_ALL)
    assert actions[:2] == [Bounce("c3", 0.0), Bounce("c1", None)]


def test_one_for_all_temporary_bystander() -> None:
    """one_for_all: a temporary sibling is removed, never restarted, and costs no restart."""
    children = [view("c1", TE, shutdown=1.0), view("c2"), view("c3")]
    actions, history = plan(children, "c2", Exit.ABNORMAL, strategy=Strategy.ONE_FOR_ALL)
    assert kinds(actions) == [
        ("bounce", "c3"),
        ("remove", "c1"),
        ("revive", "c2"),
        ("revive", "c3"),
    ]
    remove = actions[1]
    assert remove.delete is True and remove.exit is Exit.SHUTDOWN and remove.shutdown == 1.0
    assert history == [NOW]


def test_rest_for_one() -> None:
    """rest_for_one: later children bounced in reverse order; failed + later revived in order."""
    children = [view(f"c{i}") for i in range(1, 6)]
    actions, history = plan(children, "c3", Exit.ABNORMAL, strategy=Strategy.REST_FOR_ONE)
    assert kinds(actions) == [
        ("bounce", "c5"),
        ("bounce", "c4"),
        ("revive", "c3"),
        ("revive", "c4"),
        ("revive", "c5"),
    ]
    assert history == [NOW]


def test_rest_for_one_temporary_bystander() -> None:
    """rest_for_one: a temporary child after the failed one is removed, not restarted."""
    children = [view("c1"), view("c2"), view("c3", TE), view("c4")]
    actions, _ = plan(children, "c2", Exit.ABNORMAL, strategy=Strategy.REST_FOR_ONE)
    assert kinds(actions) == [
        ("bounce", "c4"),
        ("remove", "c3"),
        ("revive", "c2"),
        ("revive", "c4"),
    ]
    assert actions[1].delete is True


def test_rest_for_one_last_child() -> None:
    """rest_for_one: when the last child fails, only it is restarted."""
    children = [view("c1"), view("c2"), view("c3")]
    actions, _ = plan(children, "c3", Exit.ABNORMAL, strategy=Strategy.REST_FOR_ONE)
    assert kinds(actions) == [("revive", "c3")]


def test_simple_one_for_one() -> None:
    """simple_one_for_one: each pool member is restarted on its own."""
    children = [view("w1"), view("w2"), view("w3")]
    actions, _ = plan(children, "w2", Exit.ABNORMAL, strategy=Strategy.SIMPLE_ONE_FOR_ONE)
    assert kinds(actions) == [("revive", "w2")]


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_no_sibling_restart_without_a_restart(strategy: Strategy) -> None:
    """Siblings are only bounced if the failed child itself is restarted."""
    children = [view("c1", TR), view("c2"), view("c3")]
    actions, history = plan(children, "c1", Exit.NORMAL, strategy=strategy)
    assert kinds(actions) == [("remove", "c1")]
    assert history == []


# -- intensity and escalation ------------------------------------------------------------------


def test_one_for_one_escalation() -> None:
    """Past the intensity: every alive child stopped in reverse start order, then Escalate."""
    children = [view("c1"), view("c2", TE), view("c3", alive=False), view("c4")]
    actions, history = plan(children, "c1", Exit.ABNORMAL, intensity=2, history=[NOW - 2, NOW - 1])
    assert kinds(actions) == [
        ("remove", "c4"),
        ("remove", "c2"),
        ("remove", "c1"),
        ("escalate", ""),
    ]
    assert all(a.exit is Exit.SHUTDOWN for a in actions[:3])
    assert [a.delete for a in actions[:3]] == [False, True, False]
    assert "more than 2" in actions[-1].reason
    assert history == [NOW - 2, NOW - 1, NOW]


def test_one_for_all_escalation() -> None:
    """one_for_all past its intensity: stop all (reverse order) and escalate, no restarts."""
    children = [view("c1"), view("c2"), view("c3")]
    actions, _ = plan(
        children,
        "c2",
        Exit.ABNORMAL,
        strategy=Strategy.ONE_FOR_ALL,
        intensity=1,
        history=[NOW - 1],
    )
    assert kinds(actions) == [
        ("remove", "c3"),
        ("remove", "c2"),
        ("remove", "c1"),
        ("escalate", ""),
    ]


def test_rest_for_one_escalation() -> None:
    """rest_for_one past its intensity: all children go, not just the rest, and escalate."""
    children = [view("c1"), view("c2"), view("c3")]
    actions, _ = plan(
        children,
        "c3",
        Exit.ABNORMAL,
        strategy=Strategy.REST_FOR_ONE,
        intensity=0,
    )
    assert kinds(actions) == [
        ("remove", "c3"),
        ("remove", "c2"),
        ("remove", "c1"),
        ("escalate", ""),
    ]


def test_simple_one_for_one_escalation() -> None:
    """A pool past its intensity stops every member and escalates."""
    children = [view("w1"), view("w2")]
    actions, _ = plan(
        children,
        "w1",
        Exit.ABNORMAL,
        strategy=Strategy.SIMPLE_ONE_FOR_ONE,
        intensity=1,
        history=[NOW],
    )
    assert kinds(actions) == [("remove", "w2"), ("remove", "w1"), ("escalate", "")]


def test_intensity_zero() -> None:
    """intensity 0: the first restart attempt already escalates."""
    actions, _ = plan([view("c1")], "c1", Exit.NORMAL, intensity=0)
    assert kinds(actions) == [("remove", "c1"), ("escalate", "")]


def test_one_for_one_intensity_counts_every_child() -> None:
    """The budget is the supervisor's, shared by all children: a third crash escalates."""
    children = [view("c1"), view("c2")]
    history: list[float] = []
    for n, (failed, now) in enumerate([("c1", NOW), ("c2", NOW + 1), ("c1", NOW + 2)]):
        actions, history = plan(
            children, failed, Exit.ABNORMAL, intensity=2, history=history, now=now
        )
        escalated = any(isinstance(a, Escalate) for a in actions)
        assert escalated is (n == 2)


def test_multiple_restarts() -> None:
    """Intensity 1 in 1 s: crashes 2.1 s apart never add up (OTP's ``multiple_restarts``)."""
    history: list[float] = []
    for n in range(4):
        allowed, history = intensity_allows(history, NOW + 2.1 * n, 1, 1.0)
        assert allowed
        assert history == [NOW + 2.1 * n]


def test_sliding_window() -> None:
    """The window slides: restarts older than the period drop out, recent ones count."""
    history: list[float] = []
    verdicts = []
    for t in [0.0, 3.0, 6.0, 9.0, 9.5, 14.0]:
        allowed, history = intensity_allows(history, NOW + t, 2, 5.0)
        verdicts.append((t, allowed, [round(h - NOW, 1) for h in history]))
    assert verdicts == [
        (0.0, True, [0.0]),
        (3.0, True, [0.0, 3.0]),
        (6.0, True, [3.0, 6.0]),  # 0.0 slid out
        (9.0, True, [6.0, 9.0]),  # 3.0 slid out
        (9.5, False, [6.0, 9.0, 9.5]),  # three within 5 s: too many
        (14.0, False, [9.0, 9.5, 14.0]),  # 9.0 is exactly 5 s old: it still counts (OTP)
    ]


def test_window_is_a_burst_limit() -> None:
    """Exactly ``intensity`` restarts within ``period`` are allowed; one more is too many."""
    history: list[float] = []
    for n in range(3):
        allowed, history = intensity_allows(history, NOW + n * 0.01, 3, 5.0)
        assert allowed
    allowed, _ = intensity_allows(history, NOW + 0.04, 3, 5.0)
    assert not allowed


def test_escalation_history_is_kept_with_the_failure() -> None:
    """plan_exit returns the window with the exceeding restart in it (for the record)."""
    _, history = plan([view("c1")], "c1", Exit.ABNORMAL, intensity=1, history=[NOW - 10, NOW])
    assert history == [NOW, NOW]


# -- significant children and auto_shutdown ----------------------------------------------------


def sig_children() -> list[ChildView]:
    return [
        view("s_temp", TE, significant=True),
        view("s_trans", TR, significant=True),
        view("plain", TE),
        view("perm"),
    ]


def test_significant_temporary() -> None:
    """any_significant: a significant temporary child's own end (any exit) shuts it all down."""
    for exit in (Exit.NORMAL, Exit.ABNORMAL):
        actions, _ = plan(
            sig_children(), "s_temp", exit, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT
        )
        assert kinds(actions) == [
            ("remove", "s_temp"),
            ("remove", "perm"),
            ("remove", "plain"),
            ("remove", "s_trans"),
            ("shutdown", ""),
        ]


def test_significant_transient() -> None:
    """any_significant: a significant transient child's normal end shuts down; a crash restarts."""
    actions, _ = plan(
        sig_children(), "s_trans", Exit.NORMAL, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT
    )
    assert kinds(actions)[0] == ("remove", "s_trans")
    assert kinds(actions)[-1] == ("shutdown", "")
    actions, _ = plan(
        sig_children(), "s_trans", Exit.ABNORMAL, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT
    )
    assert kinds(actions) == [("revive", "s_trans")]


def test_nonsignificant_temporary() -> None:
    """A non-significant temporary child's end never shuts the supervisor down."""
    for mode in AutoShutdown:
        actions, _ = plan(sig_children(), "plain", Exit.NORMAL, auto_shutdown=mode)
        assert kinds(actions) == [("remove", "plain")]


def test_nonsignificant_transient() -> None:
    """A non-significant transient child's normal end never shuts the supervisor down."""
    children = [view("t", TR), view("s", TR, significant=True)]
    for mode in AutoShutdown:
        actions, _ = plan(children, "t", Exit.NORMAL, auto_shutdown=mode)
        assert kinds(actions) == [("remove", "t")]


def test_all_significant() -> None:
    """all_significant: shut down only when the last alive significant child has ended."""
    children = [view("s1", TR, significant=True), view("s2", TE, significant=True), view("p")]
    actions, _ = plan(children, "s1", Exit.NORMAL, auto_shutdown=AutoShutdown.ALL_SIGNIFICANT)
    assert kinds(actions) == [("remove", "s1")]
    children[0] = view("s1", TR, significant=True, alive=False)
    actions, _ = plan(children, "s2", Exit.NORMAL, auto_shutdown=AutoShutdown.ALL_SIGNIFICANT)
    assert kinds(actions) == [("remove", "s2"), ("remove", "p"), ("shutdown", "")]


def test_significant_never() -> None:
    """auto_shutdown never: a significant child's end only removes it."""
    actions, _ = plan(sig_children(), "s_trans", Exit.NORMAL, auto_shutdown=AutoShutdown.NEVER)
    assert kinds(actions) == [("remove", "s_trans")]


def test_significant_bystander() -> None:
    """A significant child bounced by one_for_all is restarted; no shutdown."""
    children = [view("s", TR, significant=True), view("crasher")]
    actions, _ = plan(
        children,
        "crasher",
        Exit.ABNORMAL,
        strategy=Strategy.ONE_FOR_ALL,
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )
    assert kinds(actions) == [("bounce", "s"), ("revive", "s"), ("revive", "crasher")]


def test_significant_escalation() -> None:
    """A significant child supervisor that shut down (exit shutdown) shuts its parent down."""
    children = [view("inner", TR, significant=True), view("other")]
    actions, _ = plan(children, "inner", Exit.SHUTDOWN, auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    assert kinds(actions) == [("remove", "inner"), ("remove", "other"), ("shutdown", "")]


# -- backoff -----------------------------------------------------------------------------------


def test_backoff_delays() -> None:
    """Backoff doubles from ``min`` per restart of a run of failures, up to ``max``."""
    b = Backoff(min=0.1, max=1.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_jitter() -> None:
    """Jitter scales each delay by a factor in [1, 1 + jitter]."""
    b = Backoff(min=1.0, max=10.0, jitter=0.5)
    assert b.delay(1, rand=0.0) == pytest.approx(1.0)
    assert b.delay(1, rand=1.0) == pytest.approx(1.5)
    assert b.delay(3, rand=0.5) == pytest.approx(5.0)
    for _ in range(50):
        assert 2.0 <= b.delay(2) <= 3.0


def test_backoff_in_plan() -> None:
    """A revived child waits its backoff, by how many restarts it has had."""
    b = Backoff(min=0.5, max=8.0, jitter=0.0)
    actions, _ = plan([view("c1", backoff=b, restarts=0)], "c1", Exit.ABNORMAL)
    assert actions == [Revive("c1", 0.5)]
    actions, _ = plan([view("c1", backoff=b, restarts=3)], "c1", Exit.ABNORMAL)
    assert actions == [Revive("c1", 4.0)]
    actions, _ = plan([view("c1", restarts=3)], "c1", Exit.ABNORMAL)
    assert actions == [Revive("c1", None)]


def test_backoff_reset_after() -> None:
    """A child that ran ``reset_after`` seconds without failing starts over at ``min``."""
    b = Backoff(min=0.5, max=8.0, jitter=0.0, reset_after=10.0)
    ran_long = view("c1", backoff=b, restarts=4, running_for=10.0)
    ran_short = view("c1", backoff=b, restarts=4, running_for=9.9)
    assert plan([ran_long], "c1", Exit.ABNORMAL)[0] == [Revive("c1", 0.5)]
    assert plan([ran_short], "c1", Exit.ABNORMAL)[0] == [Revive("c1", 8.0)]


def test_backoff_siblings_in_one_for_all() -> None:
    """one_for_all: each revived child waits its own backoff (none for a child without)."""
    b = Backoff(min=0.2, max=1.0, jitter=0.0)
    children = [view("c1", backoff=b), view("c2"), view("c3", backoff=b, restarts=1)]
    actions, _ = plan(children, "c2", Exit.ABNORMAL, strategy=Strategy.ONE_FOR_ALL)
    revives = [a for a in actions if isinstance(a, Revive)]
    assert revives == [Revive("c1", 0.2), Revive("c2", None), Revive("c3", 0.4)]


# -- specs and flags ---------------------------------------------------------------------------


def test_sup_start_map() -> None:
    """Defaults: permanent, 5 s shutdown, not significant; one_for_one, 1 in 5 s, never."""
    spec = child(Worker, id="c1")
    assert spec.kind == "tests.supervision.actors:Worker"
    assert spec.spec == ChildSpec()
    assert spec.spec.restart is Restart.PERMANENT
    assert spec.spec.shutdown == 5.0
    assert spec.spec.significant is False and spec.spec.backoff is None
    assert Supervisor.strategy is Strategy.ONE_FOR_ONE
    assert (Supervisor.intensity, Supervisor.period) == (1, 5.0)
    assert Supervisor.auto_shutdown is AutoShutdown.NEVER


def test_child_specs_map() -> None:
    """Bad specs are refused: unknown restart, significant permanent, intensity < 0, period <= 0."""
    with pytest.raises(ValueError):
        child(Worker, id="c1", restart="prmanent")
    with pytest.raises(ValueError, match="significant"):
        child(Worker, id="c1", restart="permanent", significant=True)
    with pytest.raises(ValueError):
        ChildSpec(intensity=-1)
    with pytest.raises(ValueError):
        ChildSpec(period=0)
    for restart in (TR, TE):
        assert child(Worker, id="c1", restart=restart, significant=True).spec.significant


def test_needs_siblings_only_where_the_plan_can_touch_them() -> None:
    """A one_for_one (or pool) restart within the intensity is planned from the failed child
    alone; the other strategies, an end that is not restarted (a significant child may shut
    the rest down) and an escalation (which stops them all) need every child."""
    from promissory.actors._strategy import needs_siblings

    def needs(strategy: Strategy, restart: str, exit: Exit, history: list[float]) -> bool:
        return needs_siblings(
            strategy=strategy,
            restart=Restart(restart),
            exit=exit,
            history=history,
            now=100.0,
            intensity=1,
            period=5.0,
        )

    assert not needs(Strategy.ONE_FOR_ONE, "permanent", Exit.ABNORMAL, [])
    assert not needs(Strategy.SIMPLE_ONE_FOR_ONE, "transient", Exit.ABNORMAL, [50.0])
    assert needs(Strategy.ONE_FOR_ONE, "permanent", Exit.ABNORMAL, [99.0])  # escalates
    assert needs(Strategy.ONE_FOR_ONE, "transient", Exit.NORMAL, [])  # not restarted
    assert needs(Strategy.ONE_FOR_ALL, "permanent", Exit.ABNORMAL, [])
    assert needs(Strategy.REST_FOR_ONE, "permanent", Exit.ABNORMAL, [])


def test_a_revive_is_stored_under_the_tag_kept_plans_and_the_store_match() -> None:
    # Kept plans hold this JSON, the step applying an action hashes it, and the store's
    # PENDING_RESTART matches the tag: it must not change (see Revive's docstring).
    stored = b'{"type":"restart","child":"a/b","delay":0.5}'
    assert msgspec.json.encode(Revive("a/b", 0.5)) == stored
    assert "a.act->>'type' = 'restart'" in PENDING_RESTART
