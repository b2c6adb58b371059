"""Forgetting a finished run: its promise, all under its id, all it owns, and its actors.

A run's *family* is the run and its continuations (``ID~resumeN``, made by ``resume``). With
each goes every promise under its id (steps, sub-agent runs and theirs), every promise it or
anything under it owns (``promises.owner``: what it created or first waited on with
``ctx.promise``, whatever its id), and its actor rows: those with a family id or under one, and
all below them in the supervision tree. All of it is deleted in one transaction, and only when
nothing of it is left to do: no promise pending (one past its timeout counts as timed out), no
canceled message whose handler still has to clean up, no actor alive on a live node or with
work in its mailbox (an idle actor that no live node holds runs nowhere: its row goes, and
deleting it fences off any stale activation). A forced forget cancels what is pending first
and waits for the family's actors on live nodes to end.

A *run*, for retention, is a message addressed to the actor made for it (its id is its
recipient's, as ``rt.start`` makes one actor per agent run) with no parent actor: a top-level
agent run. ``forget_finished`` forgets, in bounded batches, every such run whose whole family
finished before an age, by the database's clock; several nodes may run it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg

from ..errors import RunNotFinishedError
from ._codec import encode
from ._promises import prefix_bounds
from ._reads import LIVE_NODES
from ._records import ErrorInfo

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["Forgotten", "forget", "forget_finished"]

SHOWN = 10
"""How many unfinished things a refusal names."""


class Forgotten(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Store.forget`` deleted.

    Attributes:
        id: the run asked for.
        runs: the run and the continuations of it that were forgotten with it.
        promises: promises deleted (the runs, all under them, all they owned).
        actors: actor rows deleted.
        canceled: with ``force``: promises that were still pending and were canceled first.

    """

    id: str
    runs: list[str] = []
    promises: int = 0
    actors: int = 0
    canceled: int = 0


class _StillRunning(Exception):
    """Family actors are alive (forced: on a live node; else: with nothing else left to do,
    as when a run has just answered and its actor is ending): wait for them to end.
    """

    def __init__(self, unfinished: list[str]) -> None:
        super().__init__(unfinished)
        self.unfinished = unfinished


ENDING_GRACE = 5.0
"""Seconds a forget waits for a finished run's actors to end before it refuses (a run's reply
is kept a moment before its actor's end)."""


# -- the family's rows --------------------------------------------------------------------------


def _runs_sql(id: str, lock: str) -> tuple[str, dict[str, Any]]:
    """The family's run promises: ``id`` and ``id~resumeN``, locked with ``lock``."""
    low, high = prefix_bounds(id + "~resume")
    query = (
        "SELECT id FROM promises WHERE id = %(id)s OR (id >= %(low)s AND id < %(high)s "
        f"AND substr(id, %(tail)s) ~ '^[0-9]+$') ORDER BY id {lock}"
    )
    return query, {"id": id, "low": low, "high": high, "tail": len(id + "~resume") + 1}


def _under(column: str, runs: Sequence[str], params: dict[str, Any], tag: str) -> str:
    """A condition: ``column`` is one of ``runs`` or under one (a ``/``-separated child)."""
    clauses = []
    for i, run in enumerate(runs):
        low, high = prefix_bounds(run + "/")
        params[f"{tag}{i}"], params[f"{tag}{i}l"], params[f"{tag}{i}h"] = run, low, high
        upper = f" AND {column} < %({tag}{i}h)s" if high is not None else ""
        clauses.append(f"{column} = %({tag}{i})s OR ({column} >= %({tag}{i}l)s{upper})")
    return "(" + " OR ".join(clauses) + ")"


def _promises_of(runs: Sequence[str], params: dict[str, Any]) -> str:
    """The condition selecting every promise of the family: under a run, or owned by one."""
    return f"({_under('id', runs, params, 'i')} OR {_under('owner', runs, params, 'o')})"


_TREE = """
WITH RECURSIVE tree AS (
    SELECT id FROM actors WHERE {roots}
    UNION
    SELECT a.id FROM actors a JOIN tree t ON a.parent = t.id
)
SELECT a.id, a.status, a.node,
       EXISTS (SELECT 1 FROM promises p WHERE p.recipient = a.id AND p.state = 'pending')
       OR EXISTS (SELECT 1 FROM promises p WHERE p.recipient = a.id AND p.state <> 'pending'
                  AND p.awaiting IS NOT NULL) AS busy
FROM actors a JOIN tree USING (id)
ORDER BY a.seq
{lock}
"""
"""The family's actors, and for each whether its mailbox holds work (a message pending, or a
canceled one whose cleanup is still to run)."""

_UNFINISHED = """
SELECT id, kind, state, (owner IS NOT NULL AND NOT {under}) AS owned FROM promises
WHERE {promises}
  AND ((state = 'pending' AND (timeout_at IS NULL OR timeout_at > clock_timestamp()))
       OR (state <> 'pending' AND kind = 'message' AND awaiting IS NOT NULL))
ORDER BY seq
LIMIT %(shown)s
"""

_OLD_ENOUGH = """
SELECT coalesce(bool_and(state <> 'pending'
                         AND settled_at < clock_timestamp() - %(age)s * interval '1 second'),
                false)
FROM promises WHERE id = ANY(%(runs)s)
"""


_LIVE = f"SELECT EXISTS ({LIVE_NODES} WHERE n.id = %s)"


def _live(conn: psycopg.Connection[Any], node: str | None) -> bool:
    """Whether ``node`` holds its lease now (its advisory lock is held: read, never taken)."""
    if node is None:
        return False
    row = conn.execute(_LIVE, (node,)).fetchone()
    return bool(row and row[0])


class _Family:
    """What a check found forgettable: the runs, the actor rows, the promises' condition."""

    def __init__(self, runs: list[str], actors: list[str]) -> None:
        self.runs = runs
        self.actors = actors
        self.params: dict[str, Any] = {}
        self.promises = _promises_of(runs, self.params)


def _check(
    conn: psycopg.Connection[Any],
    id: str,
    *,
    force: bool,
    older_than: float | None,
    lock: bool,
) -> Forgotten | _Family | None:
    """Whether ``id``'s family can be forgotten now, and what it holds.

    Returns ``Forgotten`` with nothing in it when the run is not there, ``None`` (retention)
    when it is not to be forgotten now, else the family. Raises ``RunNotFinishedError`` or
    ``_StillRunning``. With ``lock``, every row of it is locked without waiting.
    """
    nowait = "FOR UPDATE NOWAIT" if lock else ""
    query, params = _runs_sql(id, nowait)
    runs = [row[0] for row in conn.execute(query, params).fetchall()]
    if id not in runs:
        return Forgotten(id=id)  # not there (or forgotten already): nothing to do
    if older_than is not None:
        row = conn.execute(_OLD_ENOUGH, {"runs": runs, "age": older_than}).fetchone()
        if not (row and row[0]):
            return None
    params = {"runs": runs}
    roots = f"id = ANY(%(runs)s) OR {_under('id', runs, params, 'a')}"
    tree = _TREE.format(roots=roots, lock="FOR UPDATE OF a NOWAIT" if lock else "")
    actors = conn.execute(tree, params).fetchall()
    unfinished: list[str] = []
    live: list[str] = []
    alive = 0
    for actor_id, status, node, busy in actors:
        if status not in ("running", "restarting"):
            continue
        hosted = _live(conn, node)
        if hosted and force:
            live.append(f"{actor_id} (actor, {status} on node {node})")
        if hosted or busy or status == "restarting":
            # An actor with nothing to do that no live node holds runs nowhere: it is done
            # (as when its process ended right after the run's reply, before its end was kept).
            alive += 1
            unfinished.append(f"{actor_id} (actor, {status})")
    check: dict[str, Any] = {"shown": SHOWN}
    promises = _promises_of(runs, check)
    under = _under("id", runs, check, "u")
    for pid, kind, state, owned in conn.execute(
        _UNFINISHED.format(promises=promises, under=under), check
    ).fetchall():
        what = f"{kind}, owned" if owned else kind
        doing = "pending" if state == "pending" else "cleaning up after its cancel"
        unfinished.append(f"{pid} ({what}, {doing})")
    if force and live:
        raise _StillRunning(live)
    if alive and not force and older_than is None:
        ran = {entry.partition(" (")[0] for entry in unfinished[alive:]}
        if not ran & set(runs):
            # The runs have answered: their actors are ending (an actor's end is kept a
            # moment after its reply). Wait for that before saying what is unfinished.
            raise _StillRunning(unfinished)
    if unfinished and not force:
        if older_than is not None:
            return None
        raise RunNotFinishedError(_refusal(id, unfinished), id, unfinished[:SHOWN])
    family = _Family(runs, [row[0] for row in actors])
    if lock:
        conn.execute(
            f"SELECT 1 FROM promises WHERE {family.promises} FOR UPDATE NOWAIT", family.params
        )
    return family


def _forget_once(
    conn: psycopg.Connection[Any],
    id: str,
    *,
    force: bool,
    older_than: float | None = None,
) -> Forgotten | None:
    """Forget ``id``'s family, in one transaction on ``conn``, if it can be forgotten now.

    It looks first without a lock, so a run under way is refused (or waited for) without
    holding up the node that runs it; then, in one transaction, it locks every row of the
    family without waiting (a row a node is writing means the family is busy: try again,
    never a deadlock), looks again, and deletes. Returns ``None`` (nothing done) for
    retention (``older_than`` given) when the run is held by another forgetter, not old
    enough, or not finished. Raises ``RunNotFinishedError`` (not forced) or
    ``_StillRunning`` otherwise.
    """
    found = _check(conn, id, force=force, older_than=older_than, lock=False)
    if not isinstance(found, _Family):
        return found
    try:
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '10s'")
            if older_than is not None:
                # Retention: another node forgetting this run holds it; leave it to that node.
                got = conn.execute(
                    "SELECT 1 FROM promises WHERE id = %s FOR UPDATE SKIP LOCKED", (id,)
                ).fetchone()
                if got is None:
                    return None
            family = _check(conn, id, force=force, older_than=older_than, lock=True)
            if not isinstance(family, _Family):
                return family
            deleted = conn.execute(
                f"DELETE FROM promises WHERE {family.promises}", family.params
            ).rowcount
            removed = conn.execute(
                "DELETE FROM actors WHERE id = ANY(%s)", (family.actors,)
            ).rowcount
            return Forgotten(id=id, runs=family.runs, promises=deleted, actors=removed)
    except psycopg.errors.LockNotAvailable:
        if older_than is not None:
            return None
        raise _StillRunning([f"{id} (rows of it being written now)"]) from None


def _refusal(id: str, unfinished: list[str]) -> str:
    shown = ", ".join(unfinished[:SHOWN]) + (", …" if len(unfinished) > SHOWN else "")
    return (
        f"{id} is not finished, so it is not forgotten: {shown} "
        "(wait for it, settle or cancel what is pending, or forget it with force: that cancels "
        "what is pending and waits for its actors to end)"
    )


# -- forced: cancel first -----------------------------------------------------------------------

_CANCEL_PENDING = """
UPDATE promises SET state = 'rejected_canceled', settled_at = clock_timestamp(),
                    value = %(value)s::jsonb
WHERE {promises} AND state = 'pending'
"""

_ALIVE_ROOTS = """
WITH RECURSIVE tree AS (
    SELECT id FROM actors WHERE {roots}
    UNION
    SELECT a.id FROM actors a JOIN tree t ON a.parent = t.id
)
SELECT a.id FROM actors a JOIN tree USING (id)
WHERE a.status IN ('running', 'restarting')
  AND (a.parent IS NULL OR a.parent NOT IN (SELECT id FROM tree))
ORDER BY a.seq
"""


def _cancel(store: Store, id: str, reason: str) -> int:
    """Cancel everything of ``id``'s family still pending, and end its live actors' trees.

    The runs first (the database cancels what is under them and what they own, and marks
    their messages for their handlers' cleanup), then whatever else is pending (what a
    finished run left), then each live actor tree is marked to end (``cancel_actor``): the
    node hosting it ends it, children first, after their cleanup.
    """
    query, params = _runs_sql(id, "")
    runs = [row[0] for row in store.read(lambda conn: conn.execute(query, params).fetchall())]
    if id not in runs:
        return 0
    count_params: dict[str, Any] = {}
    count = f"SELECT count(*) FROM promises WHERE {_promises_of(runs, count_params)} " + (
        "AND state = 'pending'"
    )
    row = store.read(lambda conn: conn.execute(count, count_params).fetchone())
    for run in runs:
        store.cancel(run, reason)
    value = encode(_canceled(id, reason), what="reason")
    sweep_params: dict[str, Any] = {"value": value}
    sweep = _CANCEL_PENDING.format(promises=_promises_of(runs, sweep_params))
    store.read(lambda conn: conn.execute(sweep, sweep_params))
    roots_params: dict[str, Any] = {"runs": runs}
    roots = f"id = ANY(%(runs)s) OR {_under('id', runs, roots_params, 'a')}"
    alive = store.read(
        lambda conn: conn.execute(_ALIVE_ROOTS.format(roots=roots), roots_params).fetchall()
    )
    for (actor_id,) in alive:
        store.cancel_actor(actor_id, reason)
    return int(row[0]) if row else 0


def _canceled(id: str, reason: str) -> ErrorInfo:
    return ErrorInfo(
        type="promissory.errors.PromiseCanceledError", message=reason, args=[reason, id]
    )


# -- the operations -----------------------------------------------------------------------------


def forget(store: Store, id: str, *, force: bool = False, timeout: float = 60.0) -> Forgotten:
    """Forget run ``id`` and everything of it (see the module docstring); ``Store.forget``."""
    canceled = 0
    if force:
        canceled = _cancel(store, id, f"canceled to forget {id}")
    deadline = time.monotonic() + (timeout if force else min(timeout, ENDING_GRACE))
    pause = 0.02
    while True:
        try:
            done = store.read(lambda conn: _forget_once(conn, id, force=force))
        except _StillRunning as exc:
            if time.monotonic() >= deadline and not force:
                raise RunNotFinishedError(
                    _refusal(id, exc.unfinished), id, exc.unfinished
                ) from None
            if time.monotonic() >= deadline:
                raise RunNotFinishedError(
                    f"{id} was canceled to be forgotten, but after {timeout:g} s its actors "
                    f"still run: {', '.join(exc.unfinished[:SHOWN])}; it is not forgotten "
                    "(forget it again once they have ended)",
                    id,
                    exc.unfinished[:SHOWN],
                ) from None
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)
            continue
        assert done is not None
        return msgspec.structs.replace(done, canceled=canceled)


def forget_finished(
    store: Store,
    older_than: float,
    *,
    batch: int = 100,
    keep_going: Callable[[], bool] | None = None,
) -> list[str]:
    """Forget every top-level run whose family finished more than ``older_than`` seconds ago.

    Candidates are read a batch at a time, oldest first, past the last one seen (a run that
    cannot be forgotten yet is stepped over, not read again); each is forgotten in a
    transaction of its own, skipped if another node holds it. ``keep_going`` is asked before
    each batch (a closing runtime stops between batches). Returns the runs forgotten.
    """
    forgotten: list[str] = []
    after: tuple[Any, str] | None = None
    while keep_going is None or keep_going():
        params: dict[str, Any] = {"age": older_than, "limit": batch}
        cursor = ""
        if after is not None:
            params["after_at"], params["after_id"] = after
            cursor = "AND (p.settled_at, p.id) > (%(after_at)s, %(after_id)s)"
        query = _CANDIDATES.format(cursor=cursor)

        def candidates(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(query, params).fetchall()  # noqa: B023 (called at once)

        rows = store.read(candidates)
        for run_id, _ in rows:

            def once(conn: psycopg.Connection[Any]) -> Forgotten | None:
                return _forget_once(conn, run_id, force=False, older_than=older_than)  # noqa: B023

            done = store.read(once)
            if done is not None and done.runs:
                forgotten.append(run_id)
        if len(rows) < batch:
            return forgotten
        after = (rows[-1][1], rows[-1][0])
    return forgotten


_CANDIDATES = """
SELECT p.id, p.settled_at FROM promises p
WHERE p.kind = 'message' AND p.id = p.recipient
  AND p.settled_at < clock_timestamp() - %(age)s * interval '1 second'
  {cursor}
  AND p.id !~ '~resume[0-9]+$'
  AND NOT EXISTS (SELECT 1 FROM actors a WHERE a.id = p.recipient AND a.parent IS NOT NULL)
ORDER BY p.settled_at, p.id
LIMIT %(limit)s
"""
"""Top-level runs settled before the age, oldest first (``promises_runs_settled``)."""
