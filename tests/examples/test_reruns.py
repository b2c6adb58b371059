"""An example run a second time says its run ran already, instead of seeming to run again;
forgotten, it runs anew."""

from __future__ import annotations

import time

from tests.cli.kit import promissory_args, run

from .conftest import Example

TIMER_RUN = "examples-timer"


def test_the_durable_timer_run_again_says_it_ran_already_and_answers_at_once(
    example: Example, env: dict[str, str]
) -> None:
    first = example("durable_timer", "--seconds", "1")
    assert first.returncode == 0, first.stderr

    began = time.monotonic()
    again = example("durable_timer", "--seconds", "1")

    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"{TIMER_RUN} ran already; this is its kept answer, nothing ran again "
        f"(to run it anew: promissory forget {TIMER_RUN})",
        "The price fell from 101 to 97.",
    ]
    assert time.monotonic() - began < 10

    forgot = run(promissory_args(None, "forget", TIMER_RUN), env)
    assert forgot.returncode == 0, forgot.stderr
    anew = example("durable_timer", "--seconds", "1")
    assert anew.stdout.splitlines()[0] == (
        "waiting 1.0 s on a durable timer (stop me and start me again)..."
    )
