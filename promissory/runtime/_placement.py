"""Which live node takes up an actor no node holds: a pure function of the ids.

An actor that no node holds (its node died, or left on a rolling restart) goes to one of the
live nodes that host its type, chosen by rendezvous hashing: every node computes the same
answer from the same list, so they spread the dead node's actors among themselves without
talking, and without two of them racing for each one. A node joining or leaving moves only the
actors that hash to it. (Two nodes that briefly see different lists may both try; the claim,
a conditional update, lets one win.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ..store import NodeInfo

__all__ = ["chosen_node", "hosting"]


def hosting(kind: str, nodes: Iterable[NodeInfo]) -> list[str]:
    """The ids of the nodes that host actors of type ``kind``."""
    return [n.id for n in nodes if kind in n.kinds]


def chosen_node(actor_id: str, kind: str, nodes: Sequence[NodeInfo]) -> str | None:
    """The live node that should take up ``actor_id`` (of type ``kind``), or ``None`` when no
    live node hosts that type (the actor then waits, untouched, for one that does).
    """
    candidates = hosting(kind, nodes)
    if not candidates:
        return None
    return max(candidates, key=lambda node: _score(node, actor_id))


def _score(node: str, actor_id: str) -> int:
    digest = hashlib.blake2b(f"{node}\0{actor_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
