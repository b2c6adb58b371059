"""``promissory demo``: the research team of ``promissory.demo``, shown surviving a crash.

A plain run resumes the newest unfinished demo run if there is one (the recovery pass picks it
up) and starts a new one otherwise; a run is resumed only on the model it was started with
(``--model`` or none), which its task keeps. While it runs, each step is printed as it is kept,
read from the store itself; a resumed run first lists the steps kept before the crash, which
are replayed from the store without running again. ``--crash-after N`` kills the process with
SIGKILL once N more steps are kept.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from .. import _crashpoints
from ..errors import InvalidInputError, StoreError
from ..runtime import Runtime
from ..store import Promise, Store
from ._inspect import label, load_trees, render_trees, summary, timeline
from ._table import printable

TASK = "Compare how durable execution engines and actor systems handle failure."


def newest_unfinished(store: Store) -> str | None:
    """The newest demo run that has not finished, if any."""
    return store.newest_pending_message("demo/")


def check_model(store: Store, run_id: str, model: str) -> None:
    """Refuse to resume ``run_id`` on another ``model`` than it was started with.

    Raises:
        InvalidInputError: it was, naming both and how to resume it as it began.

    """
    from ..agents import RunTask

    started = store.get(run_id).param_as(RunTask).model
    if started is None or started == model:
        return  # the same model (or a run from before models were kept: nothing to compare)
    raise InvalidInputError(
        f"the unfinished demo run {run_id} was started with {_model_option(started)}, not "
        f"{_model_option(model)}; resume it as it began: promissory demo"
        + ("" if _offline(started) else f" --model {started}")
        + f" (or cancel it, promissory cancel {run_id}, and run the demo again to start anew)"
    )


def _offline(model: str) -> bool:
    return model.startswith("offline:")


def _model_option(model: str) -> str:
    return "the offline model (no --model)" if _offline(model) else f"--model {model}"


def run_demo(args: argparse.Namespace, dsn: str, as_json: bool) -> dict[str, Any]:
    """Run (or resume) the demo; return its summary."""
    from ..demo import build_team

    out = sys.stderr if as_json else sys.stdout
    lead = build_team(args.model)
    with Store(dsn, reconnect_timeout=5.0) as store:
        run_id = newest_unfinished(store)
        resumed = run_id is not None
        if run_id is not None:
            check_model(store, run_id, lead.model.name)
        if run_id is None:
            run_id = "demo/" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
        before = [p for p in timeline(store, run_id) if p.state.settled and p.id != run_id]
    _announce(run_id, before, resumed, out)
    if args.crash_after is not None:
        print(f"(will crash with SIGKILL after {args.crash_after} more kept steps)", file=out)
        _crashpoints.arm(f"step.kept:{args.crash_after}")
    seen = {p.id for p in before}
    stop = threading.Event()
    with Runtime(dsn, suspend_after=0.05) as rt:
        assert rt.store is not None
        watcher = threading.Thread(
            target=_watch, args=(rt.store, run_id, seen, stop, out), daemon=True
        )
        watcher.start()
        if resumed:
            from ..agents import RunHandle

            handle = RunHandle(run_id, rt.store)
        else:
            handle = rt.start(lead, TASK, id=run_id)
        details = handle.details(timeout=600)
        time.sleep(0.1)
        stop.set()
        watcher.join(2)
        _print_new(rt.store, run_id, seen, out)
        kept = [p for p in timeline(rt.store, run_id) if p.state.settled and p.id != run_id]
        trees, _ = load_trees(rt.store, run_id)
    summary = {
        "run_id": run_id,
        "result": details.output,
        "steps_kept": len(kept),
        "resumed_from": len(before),
        "stop": details.stop,
        "usage": details.usage,
    }
    if not as_json:
        print(f"\nResult of {run_id}:\n{printable(str(details.output), newlines=True)}\n")
        print("Supervision tree:")
        print(render_trees(trees))
        print(f"\n{len(kept)} steps kept ({len(before)} before this process started).")
        _print_reading(run_id)
    return summary


def _announce(run_id: str, before: list[Promise], resumed: bool, out: Any) -> None:
    """Say which run starts, or which resumes and what it replays."""
    if not resumed:
        print(f"Starting {run_id}: {TASK}", file=out)
        return
    print(f"Resuming {run_id}: {len(before)} steps were kept before it stopped.", file=out)
    print("They are replayed from the store, not run again:", file=out)
    for p in before:
        print(f"  replayed  {_line(p, run_id)}", file=out)
    print("Continuing from there:", file=out)


def _print_reading(run_id: str) -> None:
    """How to read the run with SQL and ``show``."""
    print("Read the run with SQL:")
    print(f"  promissory sql \"SELECT id, state, value FROM promises WHERE id = '{run_id}'\"")
    print(
        '  promissory sql "SELECT id, state, kind FROM promises '
        f"WHERE id LIKE '{run_id}/%' ORDER BY seq\""
    )
    print(f"  promissory show {run_id}")


def _watch(store: Store, run_id: str, seen: set[str], stop: threading.Event, out: Any) -> None:
    while not stop.wait(0.05):
        try:
            _print_new(store, run_id, seen, out)
        except StoreError:  # the store closed, or went away: the run's own outcome says so
            return


def _print_new(store: Store, run_id: str, seen: set[str], out: Any) -> None:
    for p in timeline(store, run_id):
        if p.id == run_id or p.id in seen or not p.state.settled:
            continue
        seen.add(p.id)
        print(f"  kept      {_line(p, run_id)}", file=out, flush=True)


def _line(p: Promise, run_id: str) -> str:
    rel = p.id[len(run_id) :] or p.id
    what = label(p).replace(run_id, "…")
    return printable(f"{rel:<10} {what:<26} {p.state.value:<9} {summary(p)}")
