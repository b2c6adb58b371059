"""A run's stream read by another process across SIGKILLs of the process running the run:
every kept event exactly once, the partial text of a call cut by the crash discarded, and the
final answer that of an uninterrupted run."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promissory.runtime import Runtime
from tests.agents.stream_app import PIECES, agent
from tests.cli.kit import Proc, Procs, child_env, promissory_args
from tests.kit import ROOT, eventually

ANSWER = "".join(PIECES)


@pytest.fixture
def env(dsn: str, tmp_path: Path) -> dict[str, str]:
    """The children's environment: the test's DSN, and the repository on their path."""
    return child_env(dsn, tmp_path, PYTHONPATH=str(ROOT))


def app(procs: Procs, *args: str, **env: str) -> Proc:
    proc = procs.start(
        [sys.executable, "-m", "tests.agents.stream_app", *args], {**procs.env, **env}
    )
    proc.wait_for_line("^READY$")
    return proc


def events(consumer: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in consumer.out if line.startswith("{")]


def kept_once(seen: list[dict[str, Any]]) -> None:
    """Every event that comes from a kept row is there exactly once."""
    kept = [e for e in seen if e["type"] not in ("text_delta", "text_discarded")]
    keys = Counter(json.dumps(e, sort_keys=True) for e in kept)
    assert all(n == 1 for n in keys.values()), keys
    assert [e["type"] for e in kept] == [
        "run_started",
        "model_answered",
        "tool_started",
        "tool_finished",
        "model_answered",
        "run_ended",
    ], kept


def test_an_uninterrupted_run_gives_the_answer(rt: Runtime) -> None:
    assert rt.run(agent, "what is x?", id="crashy/plain", timeout=30) == ANSWER


def test_a_kill_mid_stream_discards_the_partial_text_and_streams_the_call_again(
    dsn: str, procs: Procs, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    env = {"STREAM_MARKS": str(marks), "STREAM_PIECE_SECONDS": "0.3"}
    consumer = app(procs, "consume", dsn, "crashy/1", **env)
    first = app(procs, "produce", dsn, "crashy/1", "--start", **env)
    eventually(
        lambda: len([e for e in events(consumer) if e["type"] == "text_delta"]) >= 2,
        what="two pieces streamed to the other process",
    )
    first.kill()  # SIGKILL mid-stream
    seen_before = "".join(e["text"] for e in events(consumer) if e["type"] == "text_delta")
    app(procs, "produce", dsn, "crashy/1", **env)  # recovery makes the model call again
    assert consumer.wait(60) == 0, consumer.stderr
    seen = events(consumer)
    kept_once(seen)
    [discarded] = [e for e in seen if e["type"] == "text_discarded"]
    assert ANSWER.startswith(discarded["text"]) and discarded["text"].startswith(seen_before)
    after = seen[seen.index(discarded) + 1 :]
    assert "".join(e["text"] for e in after if e["type"] == "text_delta") == ANSWER
    assert seen[-1] == {
        "type": "run_ended",
        "run": "crashy/1",
        "state": "resolved",
        "output": ANSWER,
        "error": None,
    }


def test_a_kill_mid_tool_runs_the_tool_again_and_streams_each_kept_event_once(
    dsn: str, procs: Procs, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    env = {"STREAM_MARKS": str(marks), "STREAM_TOOL_SECONDS": "30"}
    consumer = app(procs, "consume", dsn, "crashy/2", **env)
    first = app(procs, "produce", dsn, "crashy/2", "--start", **env)
    eventually(lambda: marks.exists() and "tool x" in marks.read_text(), what="the tool ran")
    first.kill()  # SIGKILL inside the tool
    app(procs, "produce", dsn, "crashy/2", **{**env, "STREAM_TOOL_SECONDS": "0"})
    assert consumer.wait(60) == 0, consumer.stderr
    seen = events(consumer)
    kept_once(seen)
    assert marks.read_text().count("tool x") == 2  # at least once: it ran again
    assert not [e for e in seen if e["type"] == "text_discarded"]
    # Live text that comes after the kept answer was read is not emitted (the answer has it).
    assert ANSWER.startswith("".join(e["text"] for e in seen if e["type"] == "text_delta"))
    assert [e["text"] for e in seen if e["type"] == "model_answered"] == ["", ANSWER]
    assert seen[-1]["output"] == ANSWER


def test_show_follow_prints_a_run_as_it_happens_and_exits_at_its_end(
    dsn: str, procs: Procs, tmp_path: Path
) -> None:
    # Slow pieces: the command joins while the text is written (what it printed before it
    # joined comes whole, from the kept answer: the lines are the same either way).
    env = {"STREAM_MARKS": str(tmp_path / "marks"), "STREAM_PIECE_SECONDS": "0.6"}
    app(procs, "produce", dsn, "crashy/3", "--start", **env)
    shown = procs.start(promissory_args(dsn, "show", "crashy/3", "--follow"))
    assert shown.wait(60) == 0, shown.stderr
    assert shown.out == [
        "run crashy/3 (stream-crashy): what is x?",
        '→ lookup({"key": "x"})',
        "← lookup: x=42",
        ANSWER,
        f"resolved: {ANSWER}",
    ]
    as_json = procs.start(promissory_args(dsn, "show", "crashy/3", "--follow", "--json"))
    assert as_json.wait(60) == 0
    assert [json.loads(line)["type"] for line in as_json.out] == [
        "run_started",
        "model_answered",
        "tool_started",
        "tool_finished",
        "model_answered",
        "run_ended",
    ]
    missing = procs.start(promissory_args(dsn, "show", "crashy/none", "--follow"))
    assert missing.wait(30) == 1
    assert missing.stderr.strip() == "promissory: no run has the id 'crashy/none'"
