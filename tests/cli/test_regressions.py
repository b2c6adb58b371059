"""Regressions: each test pins a bug found while writing this suite."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from .conftest import FinishedDemo
from .kit import ROOT, Procs, one_clean_line, promissory_args
from .test_commands import closed_port


def test_a_closed_stdout_is_not_a_traceback(
    finished_demo: FinishedDemo, env: dict[str, str]
) -> None:
    """``promissory promises --json | head -c 10``: the reader goes away; no traceback."""
    for args in (["promises", "--json"], ["show", finished_demo.run_id]):
        proc = subprocess.Popen(
            promissory_args(finished_demo.dsn, *args),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.close()  # like `head` exiting before the command writes
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, (args, err)
        assert "BrokenPipeError" not in err, (args, err)


def test_run_and_resume_give_up_on_a_missing_database_like_the_other_commands(
    procs: Procs,
) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{closed_port()}/nothing"
    began = time.monotonic()
    started = [
        procs.start(promissory_args(dsn, *args))
        for args in (["run", "tests.cli.node_app:setup"], ["resume", "x"], ["tree"])
    ]
    for proc in started:
        one_clean_line(proc.result(60))
        # 3 s connect timeouts, three processes starting at once on a loaded machine: the
        # bound only tells giving up from retrying without end
        assert time.monotonic() - began < 30, proc.argv


def test_the_node_app_s_marker_file_is_never_read_half_written(tmp_path: Path) -> None:
    # test_run read the file a node wrote while the node could still be writing it: an empty
    # read failed the test. Written to a side file and renamed, it is whole or absent.
    from .node_app import write_atomically

    path = tmp_path / "started"
    text = "1234567890" * 10_000
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(path.read_text())
            except FileNotFoundError:
                pass

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(50):
            write_atomically(path, text)
            path.unlink()
    finally:
        stop.set()
        reader.join(10)

    assert all(s == text for s in seen), {len(s) for s in seen}
