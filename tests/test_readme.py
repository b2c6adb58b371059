"""The README's Quickstart and CI agree (CI runs exactly the README's test command), and every
Python block of the README runs as it is written, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_quickstart_has_exactly_two_commands() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "promissory demo" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quickstart_commands()[1] in ci


# -- every Python block runs as written (issue 14, item 10) -------------------------------------


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment without model keys: a block that needs a network fails."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and k not in ("OPENAI_BASE_URL", "OLLAMA_HOST")
    }
    env.pop("PROMISSORY_DSN", None)
    env.update(extra)
    return env


def test_the_readme_has_python_blocks_to_run() -> None:
    assert len(python_blocks()) >= 5


@pytest.mark.timeout(180)
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_of_the_readme_runs_as_written(
    index: int, dsn: str, tmp_path: Path
) -> None:
    block = python_blocks()[index]
    env = offline_env(PROMISSORY_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    if "def test_" in block:
        # A test file for promissory's pytest plugin: run by pytest, beside the examples.
        path = tmp_path / "test_readme_block.py"
        path.write_text(block)
        env["PYTHONPATH"] = str(ROOT / "examples")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
    else:
        path = tmp_path / "readme_block.py"
        path.write_text(block)
        env["PROMISSORY_DSN"] = dsn  # where `Runtime()` with no DSN goes
        argv = [sys.executable, str(path)]

    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)

    assert done.returncode == 0, f"block {index}:\n{block}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "home" / "pgdata").exists(), "a block started the embedded server"
