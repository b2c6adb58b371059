"""``crash_test``: the runtime's own crash torture, applied to a user's scenario.

A scenario is a module-level function ``scenario(rt) -> outcome`` that starts work with fixed
ids (so running it again resumes rather than repeats), waits for it, and returns something
JSON-able. ``CrashSuite`` runs it:

1. once cleanly, on a fresh database; every finished message of a stateless actor (agent runs)
   is then replayed from its journal alone, to catch hidden non-determinism;
2. once for every step boundary ``n``: killed with SIGKILL right after the n-th step is kept,
   then run again to the end;
3. once for every step of a tool declared ``at_most_once``: killed inside it, after it
   started and before it was kept (the one place such a tool could run twice);
4. once for every commit of supervision's own bookkeeping (``exit.recorded``,
   ``actor.revived``, ``actor.bounced``): killed right after it, before what depends on it;
5. once for every batch, of each kind of write in ``drops`` (up to ``max_drops`` of each),
   whose database connection is cut inside its COMMIT: the process lives on, and must find
   out what happened rather than run the write again or give it up;
6. ``random_kills`` times, killed at a random moment of the scenario (after the runtime
   opened), with a connection drop at a random write of the run as well for
   ``random_drops`` of them, then run again.

After each it checks that the outcome equals the clean run's; that the transcript (every
promise's id, kind and state) equals the clean run's (values are shown but not compared: a
step run again after a crash may return another value); that every actor ends with the
clean run's status, restart count and state; that no step kept before the kill started again
(and, with only a connection cut, that no step ran twice); that nothing is left pending; that
no tool declared ``at_most_once`` ran twice; and that the tools named in
``check_idempotency`` key their effects by their idempotency key.
A failure names the boundary (the step id and what it was) and shows both transcripts side by
side.
"""

from __future__ import annotations

import contextlib
import difflib
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from .._crashpoints import COUNT_ENV
from ..errors import InvalidInputError
from ._effects import EffectRecord, read_log
from ._harness import CrashTest, Run

__all__ = ["CrashFailure", "CrashReport", "CrashSuite", "kept_steps", "reset_schema"]

_PROMISSORY_TABLES = (
    "promises",
    "actors",
    "nodes",
    "schedules",
    "promissory_migrations",
    "rpc_tasks",
    "rpc_callbacks",
    "rpc_listeners",
    "rpc_outbox",
    "rpc_schedules",
)

BOOKKEEPING_POINTS = ("exit.recorded", "actor.revived", "actor.bounced")
"""Crash points right after a commit of supervision's own bookkeeping."""

DROP_LABELS = ("exit", "revive", "bounce", "end", "complete", "suspend", "step", "send", "claim")
"""The kinds of write whose COMMIT gets a connection cut, by default."""


class CrashFailure(AssertionError):
    """A crash changed what the scenario did (the message says where and how)."""


class CrashReport(msgspec.Struct):
    """What a crash suite ran: how many kills, where, and how long it took."""

    scenario: str
    boundaries: int
    """Step boundaries killed at (after each step kept)."""
    in_step_kills: int
    """Kills inside a step of an ``at_most_once`` tool."""
    random_kills: int
    runs: int
    seconds: float
    outcome: Any
    bookkeeping_kills: int = 0
    """Kills right after a commit of supervision's own bookkeeping."""
    drops: int = 0
    """Runs whose connection was cut inside a COMMIT."""


def reset_schema(dsn: str) -> None:
    """Drop promissory's tables and functions from the DSN's schema (a test schema)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(_PROMISSORY_TABLES)} CASCADE")
        # Each by its signature (``regprocedure``): a function with arguments too.
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'promissory%%'"
        ).fetchall()
        for (signature,) in rows:
            conn.execute(f"DROP FUNCTION IF EXISTS {signature} CASCADE")


class CrashSuite:
    """Crash-tests one scenario (see the module docstring).

    Args:
        dsn: a database (schema) the suite may wipe between runs.
        scenario: ``"module:function"``.
        workdir: where the effect logs go.
        random_kills: how many random kills after the boundaries.
        check_idempotency: tool names whose effects must be keyed by their idempotency key.
        allow_pending: ids (prefixes) that may legitimately stay pending at the end.
        max_boundaries: stop after this many step boundaries (and as many of each
            bookkeeping point).
        drops: the kinds of write (op labels) whose COMMITs get a connection cut.
        max_drops: how many batches of each kind (the first ones) get one.
        random_drops: how many of the random kills also cut a connection at a random write.
        seed: for the random kills.
        timeout: seconds one child run may take.

    """

    def __init__(
        self,
        dsn: str,
        scenario: str | Callable[..., Any],
        *,
        workdir: str | Path,
        random_kills: int = 10,
        check_idempotency: tuple[str, ...] = (),
        allow_pending: tuple[str, ...] = (),
        max_boundaries: int = 200,
        drops: tuple[str, ...] = DROP_LABELS,
        max_drops: int = 1,
        random_drops: int = 0,
        seed: int = 0,
        timeout: float = 60.0,
        replay_check: bool = True,
    ) -> None:
        self.dsn = dsn
        self.scenario = scenario if isinstance(scenario, str) else _name_of(scenario)
        self.workdir = Path(workdir)
        self.random_kills = random_kills
        self.check_idempotency = check_idempotency
        self.allow_pending = allow_pending
        self.max_boundaries = max_boundaries
        self.drops = drops
        self.max_drops = max_drops
        self.random_drops = random_drops
        self.rng = random.Random(seed)
        self._actors: list[Any] = []
        self.timeout = timeout
        self.replay_check = replay_check
        self.runs = 0
        self._case = 0

    def run(self) -> CrashReport:
        """Run the whole suite; raise ``CrashFailure`` at the first divergence."""
        started = time.monotonic()
        clean_test, clean = self._clean()
        reference = _transcript(self.dsn, values=True)
        tools = _tools_of(clean)
        boundaries = 0
        for n in range(1, self.max_boundaries + 1):
            if not self._case_ends(f"step.kept:{n}", clean, reference, tools):
                break
            boundaries += 1
        # Inside each at-most-once tool's step: the n-th step started in the clean run.
        steps = [r for r in read_log(clean_test.effects_file) if r.what == "step"]
        inside = [n for n, r in enumerate(steps, 1) if tools.get(r.name) == "at_most_once"]
        for n in inside:
            self._case_ends(f"step.started:{n}", clean, reference, tools)
        # Where the clean run went: kills and drops only where there is something to hit.
        seen = _points_of(clean)
        bookkeeping = 0
        for point in BOOKKEEPING_POINTS:
            for n in range(1, min(seen.get(point, 0), self.max_boundaries) + 1):
                if self._case_ends(f"{point}:{n}", clean, reference, tools):
                    bookkeeping += 1
        drops = 0
        for label in self.drops:
            for n in range(1, min(seen.get(f"batch:{label}", 0), self.max_drops) + 1):
                if self._case_ends(None, clean, reference, tools, drop_at=f"{label}:{n}"):
                    drops += 1
        labels = [label for label in self.drops if seen.get(f"batch:{label}")]
        # Random moments of the scenario itself, not of the interpreter's start.
        begin = clean.scenario_began or 0.1
        end = max(clean.seconds, begin + 0.2)
        for i in range(self.random_kills):
            drop = None
            if i < self.random_drops and labels:
                label = self.rng.choice(labels)
                drop = f"{label}:{self.rng.randint(1, seen[f'batch:{label}'])}"
            self._case_ends(
                None, clean, reference, tools, kill_after=self.rng.uniform(begin, end), drop_at=drop
            )
        return CrashReport(
            scenario=self.scenario,
            boundaries=boundaries,
            in_step_kills=len(inside),
            bookkeeping_kills=bookkeeping,
            drops=drops,
            random_kills=self.random_kills,
            runs=self.runs,
            seconds=time.monotonic() - started,
            outcome=clean.outcome,
        )

    # -- one case ----------------------------------------------------------------------------

    def _clean(self) -> tuple[CrashTest, Run]:
        reset_schema(self.dsn)
        test = self._test("clean", replay=self.replay_check)
        run = test.run()
        self.runs += 1
        if run.killed or run.outcome is None:
            raise CrashFailure(f"the clean run of {self.scenario} did not finish:\n{run.stderr}")
        self._actors = _actor_rows(self.dsn)
        problems = _replay_problems(run)
        if problems:
            raise CrashFailure(
                "the clean run replays differently from its journal:\n  " + "\n  ".join(problems)
            )
        self._check_pending("the clean run")
        return test, run

    def _case_ends(
        self,
        crash_at: str | None,
        clean: Run,
        reference: list[Any],
        tools: dict[str, str],
        kill_after: float | None = None,
        drop_at: str | None = None,
    ) -> bool:
        """Run one kill-and-resume case; ``False`` if the kill (or the connection drop) never
        happened (no such point).
        """
        reset_schema(self.dsn)
        self._case += 1
        test = self._test(f"case-{self._case}")
        killed = test.run(crash_at=crash_at, kill_after=kill_after, drop_at=drop_at)
        self.runs += 1
        if not killed.killed:
            if crash_at is not None:
                return False  # the n-th boundary does not exist: all were covered
            if drop_at is not None and kill_after is None:
                if killed.dropped is None:
                    return False  # no n-th batch of that kind: all were covered
                where = f"a connection cut inside the COMMIT of {killed.dropped}"
                records = read_log(test.effects_file)
                twice = _started_twice(records)
                if twice:
                    raise CrashFailure(f"after {where}, steps ran twice: {twice}")
                self._compare(killed, clean, reference, where)
                return True
            self._compare(killed, clean, reference, "a random kill that came after the end")
            return True
        where = _where(killed, self.dsn, kill_after, read_log(test.effects_file))
        kept_at_kill = kept_steps(self.dsn)
        before = len(read_log(test.effects_file))
        final = None
        for _ in range(3):
            final = test.run()
            self.runs += 1
            if not final.killed:
                break
        assert final is not None
        after = read_log(test.effects_file)
        self._check_effects(after, before, kept_at_kill, tools, where)
        self._compare(final, clean, reference, where)
        return True

    def _compare(self, final: Run, clean: Run, reference: list[Any], where: str) -> None:
        transcript = _transcript(self.dsn, values=True)
        shape = [row[:3] for row in transcript]
        if final.outcome != clean.outcome or shape != [row[:3] for row in reference]:
            raise CrashFailure(
                f"after a crash at {where}, the run differs from the one without the crash:\n"
                f"  outcome without the crash: {clean.outcome!r}\n"
                f"  outcome with it:           {final.outcome!r}\n"
                "transcripts (id, kind, state, value; ! marks the rows that differ):\n"
                + _side_by_side(reference, transcript)
            )
        actors = _actor_rows(self.dsn)
        if actors != self._actors:
            diff = [
                f"  {a!r}\n  {b!r}" for a, b in zip(self._actors, actors, strict=False) if a != b
            ]
            raise CrashFailure(
                f"after a crash at {where}, actors differ from the run without the crash "
                f"(id, status, restarts, state; without, then with):\n"
                + "\n".join(diff[:10])
                + (
                    ""
                    if len(actors) == len(self._actors)
                    else f"\n  {len(self._actors)} actors without the crash, {len(actors)} with it"
                )
            )
        self._check_pending(f"after a crash at {where}")

    def _check_effects(
        self,
        records: list[EffectRecord],
        before: int,
        kept_at_kill: set[str],
        tools: dict[str, str],
        where: str,
    ) -> None:
        started_after = [r for r in records[before:] if r.what == "step"]
        again = sorted({r.key for r in started_after} & kept_at_kill)
        if again:
            raise CrashFailure(f"after a crash at {where}, kept steps ran again: {again}")
        starts: dict[str, int] = {}
        for r in records:
            if r.what == "step":
                starts[r.key] = starts.get(r.key, 0) + 1
        labels = {r.key: r.name for r in records if r.what == "step"}
        for step, count in starts.items():
            label = labels[step]
            if count > 1 and tools.get(label) == "at_most_once":
                raise CrashFailure(
                    f"{label} is declared at_most_once, but step {step} ran {count} times after "
                    f"a crash at {where}"
                )
        for r in records:
            if r.what != "effect" or not r.step:
                continue
            label = labels.get(r.step, "")
            if label.removeprefix("tool:") in self.check_idempotency and r.key != r.step:
                raise CrashFailure(
                    f"{label} records its effect {r.name!r} with the key {r.key!r}, not its "
                    f"idempotency key {r.step!r}: a retry after a crash would repeat it"
                )

    def _check_pending(self, when: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT id FROM promises WHERE state = 'pending' ORDER BY seq"
            ).fetchall()
        left = [r[0] for r in rows if not r[0].startswith(self.allow_pending or ("\x00",))]
        if left:
            raise CrashFailure(f"{when}, promises are left pending: {left[:10]}")

    def _test(self, name: str, replay: bool = False) -> CrashTest:
        env = {"PROMISSORY_CHECK_REPLAY": "1", COUNT_ENV: "1"} if replay else {}
        return CrashTest(
            self.dsn, self.scenario, workdir=self.workdir / name, timeout=self.timeout, env=env
        )


@contextlib.contextmanager
def _connection(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def _transcript(dsn: str, values: bool = False) -> list[Any]:
    """Every promise as (id, kind, state), and its value when ``values``: values may differ
    between runs (a model's call ids, clock readings) where the shape may not.
    """
    columns = "id, kind, state" + (", left(value::text, 100)" if values else "")
    with _connection(dsn) as conn:
        rows = conn.execute(f"SELECT {columns} FROM promises ORDER BY seq").fetchall()
    return sorted(([_without_seq_epoch(r[0]), *r[1:]] for r in rows), key=lambda r: str(r[0]))


_SEQ_EPOCH = re.compile(r"(?<=/)\d+-\d+(?=/|$)")


def _without_seq_epoch(id: str) -> str:
    """``id`` with the ``{seq}-{epoch}`` segments the runtime puts in the ids of the messages
    it sends on an actor's behalf (a child's exit, a start, a watcher's notice) made ``*``:
    they number the actor's row and activation, which a crash changes (a recovery's claim, a
    spawn replayed), not what happened.
    """
    return _SEQ_EPOCH.sub("*", id)


def _actor_rows(dsn: str) -> list[Any]:
    """Every actor as (id, status, restarts, state): what a crash must not change.

    Fractional numbers in a state are shown as ``<float>``: they are clock readings (a
    supervisor's restart times) more often than not, and a run's clock is its own.
    """
    with _connection(dsn) as conn:
        rows = conn.execute("SELECT id, status, restarts, state FROM actors ORDER BY id").fetchall()
    return [[i, status, restarts, _floats_hidden(state)] for i, status, restarts, state in rows]


def _floats_hidden(state: Any) -> Any:
    value = msgspec.json.decode(state) if isinstance(state, bytes | str) else state

    def hide(v: Any) -> Any:
        if isinstance(v, float):
            return "<float>"
        if isinstance(v, list):
            return [hide(x) for x in v]
        if isinstance(v, dict):
            return {k: hide(x) for k, x in v.items()}
        return v

    return hide(value)


def _started_twice(records: list[EffectRecord]) -> list[str]:
    """Steps that started more than once (none may, when no process was killed)."""
    seen: dict[str, int] = {}
    for r in records:
        if r.what == "step":
            seen[r.key] = seen.get(r.key, 0) + 1
    return sorted(k for k, n in seen.items() if n > 1)


def kept_steps(dsn: str) -> set[str]:
    """The ids of the steps kept (settled) in the store at ``dsn`` now; none before the schema
    exists (a process killed before it made it).
    """
    with _connection(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('promises')").fetchone()
        if exists is None or exists[0] is None:
            return set()
        rows = conn.execute(
            "SELECT id FROM promises WHERE kind = 'step' AND state <> 'pending'"
        ).fetchall()
    return {r[0] for r in rows}


def _where(run: Run, dsn: str, kill_after: float | None, records: list[EffectRecord]) -> str:
    """The kill's place: the crash point and the step there (its kind and what it runs)."""
    point = run.crash_point
    if point is None:
        return f"a random moment ({kill_after:.3f} s in)"
    step = point.rsplit(" at ", 1)[-1]
    with _connection(dsn) as conn:
        row = conn.execute(
            "SELECT kind, fingerprint FROM promises WHERE id = %s", (step,)
        ).fetchone()
    # What the step ran: the effects log has its label (tool:search, model:lead, module.fn).
    label = next((r.name for r in records if r.what == "step" and r.key == step), None)
    if row is None:
        return f"{point} (step {label or '?'}, started, not kept)"
    return f"{point} ({row[0]} {label or row[1]})"


def _side_by_side(expected: list[Any], actual: list[Any], width: int = 72) -> str:
    """Both transcripts in two columns, aligned on their (id, kind, state) rows; rows that
    differ are marked, and long runs of equal rows are shortened to one line.
    """

    def cell(row: list[Any] | None) -> str:
        text = "" if row is None else " ".join(str(x) for x in row)
        return text if len(text) <= width else text[: width - 1] + "…"

    matcher = difflib.SequenceMatcher(
        a=[tuple(r[:3]) for r in expected], b=[tuple(r[:3]) for r in actual], autojunk=False
    )
    lines = [f"  {'without the crash':<{width}} | with it"]
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pairs = list(zip(expected[i1:i2], actual[j1:j2], strict=True))
            if len(pairs) > 4:
                hidden = len(pairs) - 2
                shown = [pairs[0], None, pairs[-1]]
            else:
                shown, hidden = list(pairs), 0
            for pair in shown:
                if pair is None:
                    lines.append(f"  {f'… {hidden} equal rows …':<{width}} |")
                else:
                    lines.append(f"  {cell(pair[0]):<{width}} | {cell(pair[1])}")
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            left = expected[i1 + k] if i1 + k < i2 else None
            right = actual[j1 + k] if j1 + k < j2 else None
            lines.append(f"! {cell(left):<{width}} | {cell(right)}")
    return "\n".join(lines)


def _tools_of(run: Run) -> dict[str, str]:
    for line in run.stdout.splitlines():
        if line.startswith("TOOLS "):
            tools: dict[str, str] = msgspec.json.decode(line[6:])
            return tools
    return {}


def _points_of(run: Run) -> dict[str, int]:
    for line in run.stdout.splitlines():
        if line.startswith("POINTS "):
            points: dict[str, int] = msgspec.json.decode(line[7:])
            return points
    return {}


def _replay_problems(run: Run) -> list[str]:
    for line in run.stdout.splitlines():
        if line.startswith("REPLAY "):
            problems: list[str] = msgspec.json.decode(line[7:])
            return problems
    return []


def _name_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    if not module or module == "__main__" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise InvalidInputError(
            "a crash-test scenario must be a module-level function in an importable module"
        )
    return f"{module}:{fn.__qualname__}"
