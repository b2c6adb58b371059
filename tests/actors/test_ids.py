"""Message ids the runtime chooses: time-ordered, random after the time, never repeated."""

from __future__ import annotations

import os
import re
import threading

import pytest

from promissory.actors import new_message_id

pytestmark = pytest.mark.timeout(30)

_ID = re.compile(r"^a/b/m-[0-9a-z]{11}[0-9a-z]{8}$")


def test_an_id_is_the_actor_then_time_then_noise() -> None:
    first, second = new_message_id("a/b"), new_message_id("a/b")
    assert _ID.match(first) and _ID.match(second), (first, second)
    assert first[:-8] <= second[:-8]  # sorted by the time they were made
    assert first != second


def test_threads_drawing_at_once_never_share_noise() -> None:
    # Each thread reads randomness ahead into a buffer of its own; thousands of ids from
    # eight threads at once, past several refills each, are all distinct in their noise.
    found: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def draw(k: int) -> None:
        start.wait()
        found[k] = [new_message_id("a/b")[-8:] for _ in range(3000)]

    threads = [threading.Thread(target=draw, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    noise = [n for part in found for n in part]
    assert len(set(noise)) == len(noise) == 24000


def test_a_forked_child_does_not_reuse_its_parents_noise() -> None:
    # The parent has bytes read ahead; a child forked now must draw fresh ones, or parent
    # and child would both hand out the same ids (one process's send would then look like
    # an idempotent repeat of the other's).
    new_message_id("a/b")  # the buffer is filled, and more is left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send back the noise of its next ids
        try:
            os.close(read)
            os.write(write, ",".join(new_message_id("a/b")[-8:] for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {new_message_id("a/b")[-8:] for _ in range(50)}
    assert len(child) == 50
    assert not child & parent
