"""``crash_test``: the runtime's own crash torture, applied to a user's scenario.

A scenario is a module-level function ``scenario(rt) -> outcome`` that starts work with fixed
ids (so running it again resumes rather than repeats), waits for it, and returns something
JSON-able. ``CrashSuite`` runs it:

1. once cleanly, on a fresh database; every finished message of a stateless actor (agent runs)
   is then replayed from its journal alone, to catch hidden non-determinism;
2. once for every step boundary ``n``: killed with SIGKILL right after the n-th step is kept,
   then run again to the end;
3. ``random_kills`` times, killed at a random moment, then run again.

After each it checks that the outcome equals the clean run's; that the transcript (every
promise's id, kind, state and value) equals the clean run's; that no step kept before the kill
started again; that nothing is left pending; that no tool declared ``at_most_once`` ran twice;
and that the tools named in ``check_idempotency`` key their effects by their idempotency key.
A failure names the boundary (the step id and what it was) and shows both transcripts.
"""

from __future__ import annotations

import contextlib
import difflib
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from ._effects import EffectRecord, read_log
from ._harness import CrashTest, Run

__all__ = ["CrashFailure", "CrashReport", "CrashSuite", "reset_schema"]

_PROMISSORY_TABLES = ("promises", "actors", "nodes", "promissory_migrations")


class CrashFailure(AssertionError):
    """A crash changed what the scenario did (the message says where and how)."""


class CrashReport(msgspec.Struct):
    """What a crash suite ran: how many kills, where, and how long it took."""

    scenario: str
    boundaries: int
    random_kills: int
    runs: int
    seconds: float
    outcome: Any


def reset_schema(dsn: str) -> None:
    """Drop promissory's tables and functions from the DSN's schema (a test schema)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(_PROMISSORY_TABLES)} CASCADE")
        rows = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname LIKE 'promissory%%'"
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP FUNCTION IF EXISTS "{name}"() CASCADE')


class CrashSuite:
    """Crash-tests one scenario (see the module docstring).

    Args:
        dsn: a database (schema) the suite may wipe between runs.
        scenario: ``"module:function"``.
        workdir: where the effect logs go.
        random_kills: how many random kills after the boundaries.
        check_idempotency: tool names whose effects must be keyed by their idempotency key.
        allow_pending: ids (prefixes) that may legitimately stay pending at the end.
        max_boundaries: stop after this many step boundaries.
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
        self.rng = random.Random(seed)
        self.timeout = timeout
        self.replay_check = replay_check
        self.runs = 0
        self._case = 0

    def run(self) -> CrashReport:
        """Run the whole suite; raise ``CrashFailure`` at the first divergence."""
        started = time.monotonic()
        _, clean = self._clean()
        reference = _transcript(self.dsn, values=True)
        tools = _tools_of(clean)
        boundaries = 0
        for n in range(1, self.max_boundaries + 1):
            if not self._case_ends(f"step.kept:{n}", clean, reference, tools):
                break
            boundaries += 1
        duration = max(clean.seconds, 0.3)
        for _ in range(self.random_kills):
            self._case_ends(
                None, clean, reference, tools, kill_after=self.rng.uniform(0.1, duration)
            )
        return CrashReport(
            scenario=self.scenario,
            boundaries=boundaries,
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
    ) -> bool:
        """Run one kill-and-resume case; ``False`` if the kill never happened (no such point)."""
        reset_schema(self.dsn)
        self._case += 1
        test = self._test(f"case-{self._case}")
        killed = test.run(crash_at=crash_at, kill_after=kill_after)
        self.runs += 1
        if not killed.killed:
            if crash_at is not None:
                return False  # the n-th boundary does not exist: all were covered
            self._compare(killed, clean, reference, "a random kill that came after the end")
            return True
        where = _where(killed, self.dsn, kill_after)
        kept_at_kill = _kept_steps(self.dsn)
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
                "transcripts (- without the crash, + with it):\n"
                + _side_by_side(reference, transcript)
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
        env = {"PROMISSORY_CHECK_REPLAY": "1"} if replay else {}
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
    return sorted(([*r] for r in rows), key=lambda r: str(r[0]))


def _kept_steps(dsn: str) -> set[str]:
    with _connection(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('promises')").fetchone()
        if exists is None or exists[0] is None:
            return set()
        rows = conn.execute(
            "SELECT id FROM promises WHERE kind = 'step' AND state <> 'pending'"
        ).fetchall()
    return {r[0] for r in rows}


def _where(run: Run, dsn: str, kill_after: float | None) -> str:
    point = run.crash_point
    if point is None:
        return f"a random moment ({kill_after:.3f} s in)"
    step = point.rsplit(" at ", 1)[-1]
    with _connection(dsn) as conn:
        row = conn.execute(
            "SELECT kind, fingerprint FROM promises WHERE id = %s", (step,)
        ).fetchone()
    what = f"{row[0]} {row[1]}" if row else "?"
    return f"{point} ({what})"


def _side_by_side(expected: list[Any], actual: list[Any]) -> str:
    left = [" | ".join(str(x) for x in row)[:160] for row in expected]
    right = [" | ".join(str(x) for x in row)[:160] for row in actual]
    return "\n".join(difflib.unified_diff(left, right, "without the crash", "with it", lineterm=""))


def _tools_of(run: Run) -> dict[str, str]:
    for line in run.stdout.splitlines():
        if line.startswith("TOOLS "):
            tools: dict[str, str] = msgspec.json.decode(line[6:])
            return tools
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
        raise ValueError(
            "a crash-test scenario must be a module-level function in an importable module"
        )
    return f"{module}:{fn.__qualname__}"
