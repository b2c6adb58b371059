"""``promissory demo`` resumes a run only on the model it was started with: a run keeps its
``--model`` (or none), and a resume with another is refused in one line that says which model
the run began with and how to pass it; nothing of the run is touched."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator

import pytest

from tests.agents.fake_llm import FakeProvider

from .conftest import Cli
from .kit import json_out, one_clean_line, sql
from .test_demo import _fake_openai_role, settled_after_kill, settled_under


@pytest.fixture
def fake(env: dict[str, str]) -> Iterator[FakeProvider]:
    """A loopback OpenAI-compatible model the demo's children can reach."""
    env["OPENAI_API_KEY"] = "sk-loopback"
    provider = FakeProvider()
    for _ in range(30):
        provider.answer_with(_fake_openai_role)
    try:
        yield provider
    finally:
        provider.close()


def crashed_run(cli: Cli, *args: str) -> str:
    crashed = cli("demo", "--crash-after", "2", *args)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    started = re.search(r"^Starting (demo/\S+): ", crashed.stdout, re.M)
    assert started, crashed.stdout
    return started.group(1)


def test_a_demo_started_on_a_model_is_not_resumed_without_it(
    cli: Cli, dsn: str, fake: FakeProvider
) -> None:
    model = f"{fake.openai_url}#fake-model"
    run_id = crashed_run(cli, "--model", model)
    kept = len(settled_after_kill(dsn, run_id))
    assert sql(dsn, "SELECT param->>'model' FROM promises WHERE id = %s", run_id) == [(model,)]

    refused = cli("demo")

    assert refused.returncode == 1
    assert one_clean_line(refused) == (
        f"promissory: the unfinished demo run {run_id} was started with --model {model}, not "
        f"the offline model (no --model); resume it as it began: promissory demo --model "
        f"{model} (or cancel it, promissory cancel {run_id}, and run the demo again to start "
        "anew)"
    )
    assert sql(dsn, "SELECT state FROM promises WHERE id = %s", run_id) == [("pending",)]
    assert settled_under(dsn, run_id) == kept  # nothing ran on the offline model

    resumed = json_out(cli("demo", "--model", model, "--json"))

    assert resumed["run_id"] == run_id and resumed["resumed_from"] == kept
    assert resumed["result"].startswith("Real-model summary: ")


def test_a_demo_started_offline_is_not_resumed_on_a_model(
    cli: Cli, dsn: str, fake: FakeProvider
) -> None:
    run_id = crashed_run(cli)
    model = f"{fake.openai_url}#fake-model"

    refused = cli("demo", "--model", model)

    assert refused.returncode == 1
    assert one_clean_line(refused) == (
        f"promissory: the unfinished demo run {run_id} was started with the offline model "
        f"(no --model), not --model {model}; resume it as it began: promissory demo (or cancel "
        f"it, promissory cancel {run_id}, and run the demo again to start anew)"
    )
    assert fake.requests == []
    assert json_out(cli("demo", "--json"))["run_id"] == run_id
