"""Fixtures of the fleet tests: node processes, stopped at the end whatever happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fleet.kit import Node


@pytest.fixture
def nodes(dsn: str, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(types: list[str], name: str | None = None, **env: str) -> Node:
        node = Node(dsn, types, tmp_path / "side.log", name or f"n{len(started)}", **env)
        started.append(node)
        return node

    yield start
    for node in started:
        node.close()


@pytest.fixture
def side_log(tmp_path: Path) -> Path:
    return tmp_path / "side.log"
