"""``promissory fork ID --at STEP``: a new run from a run's kept steps, with a changed prompt,
hosted by the command to its end; ``show`` links the two."""

from __future__ import annotations

import json

from promissory import Runtime

from .conftest import Cli
from .forkable import agent
from .kit import one_clean_line, sql

MODULE = ["--module", "tests.cli.forkable"]


def test_fork_runs_the_rest_anew_with_the_prompt_and_show_links_the_two(dsn: str, cli: Cli) -> None:
    with Runtime(dsn) as rt:
        assert rt.run(agent, "go", id="cli/fork-source") == "Answer. k1=1 k2=1"
    # Steps: 1 model, 2 lookup, 3 model, 4 lookup, 5 model.
    forked = cli("fork", "cli/fork-source", "--at", "3", "--prompt", "Answer again.", *MODULE)
    assert forked.returncode == 0, forked.stderr
    assert forked.stdout.strip() == (
        "cli/fork-source~fork1 (forked from cli/fork-source at step 3):\nAnswer again. k1=1 k2=1"
    )
    [(n,)] = sql(
        dsn, "SELECT count(*) FROM promises WHERE starts_with(id, 'cli/fork-source~fork1/')"
    )
    assert n == 3  # steps 3, 4, 5 ran anew; 1 and 2 were read from the source
    source = cli("show", "cli/fork-source")
    assert "forked as cli/fork-source~fork1 at step 3 (resolved)" in source.stdout
    fork = cli("show", "cli/fork-source~fork1")
    assert "forked from cli/fork-source at step 3 (prompt changed)" in fork.stdout
    again = cli("fork", "cli/fork-source", "--at", "5", "--json", *MODULE)
    assert json.loads(again.stdout) == {
        "run_id": "cli/fork-source~fork2",
        "forked": "cli/fork-source",
        "at": "5",
        "result": "Answer. k1=1 k2=1",
    }


def test_fork_at_a_step_the_run_does_not_have_is_one_clean_line(dsn: str, cli: Cli) -> None:
    with Runtime(dsn) as rt:
        rt.run(agent, "go", id="cli/fork-short")
    bad = cli("fork", "cli/fork-short", "--at", "9", *MODULE)
    assert bad.returncode == 2
    assert "at_step must name a kept step of cli/fork-short: its position (1 to 5)" in (
        one_clean_line(bad)
    )
    missing = cli("fork", "cli/nothing", "--at", "1", *MODULE)
    assert one_clean_line(missing) == "promissory: no run has the id 'cli/nothing'"
