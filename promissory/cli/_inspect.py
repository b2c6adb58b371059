"""Reading the store for people: supervision trees, timelines, listings, step labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ..store import Promise, Store
from ..store._promises import COLUMNS, prefix_bounds, promise_from_row
from ._table import cell


class TreeNode:
    """One actor in a printed tree."""

    def __init__(self, row: Sequence[Any]) -> None:
        self.id: str = row[0]
        self.parent: str | None = row[1]
        self.kind: str = row[2]
        self.status: str = row[3]
        self.restarts: int = row[4]
        self.pending: int = row[5]
        self.children: list[TreeNode] = []

    def as_json(self) -> dict[str, Any]:
        """The node and its children as plain data."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "restarts": self.restarts,
            "pending": self.pending,
            "children": [c.as_json() for c in self.children],
        }


_TREE = """
SELECT a.id, a.parent, a.kind, a.status, a.restarts,
       (SELECT count(*) FROM promises p WHERE p.recipient = a.id AND p.state = 'pending')
FROM actors a
WHERE %(root)s::text IS NULL OR a.id = %(root)s OR (a.id >= %(low)s AND a.id < %(high)s)
ORDER BY a.seq
"""


def load_trees(store: Store, root: str | None) -> list[TreeNode]:
    """The supervision trees (all, or the one rooted at ``root``), children in start order."""
    low, high = prefix_bounds((root or "") + "/")
    params = {"root": root, "low": low, "high": high}
    rows = store.read(lambda conn: conn.execute(_TREE, params).fetchall())
    nodes = {r[0]: TreeNode(r) for r in rows}
    roots: list[TreeNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent) if node.parent else None
        if parent is not None and node.id != root:
            parent.children.append(node)
        else:
            roots.append(node)
    if root is not None:
        roots = [n for n in roots if n.id == root] or roots
    return roots


def render_trees(roots: list[TreeNode]) -> str:
    """Trees as indented text with status, restarts and pending messages."""
    lines: list[str] = []

    def walk(node: TreeNode, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        detail = f"{node.status}, restarts {node.restarts}, pending {node.pending}"
        lines.append(f"{prefix}{branch}{node.id}  [{_short_kind(node.kind)}] {detail}")
        child_prefix = prefix + ("" if top else ("    " if last else "│   "))
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return "\n".join(lines) if lines else "(no actors)"


def _short_kind(kind: str) -> str:
    return kind.rsplit(":", 1)[-1]


def timeline(store: Store, id: str) -> list[Promise]:
    """A promise and every promise under it, in creation order."""
    low, high = prefix_bounds(id + "/")
    query = f"SELECT {COLUMNS} FROM promises WHERE id = %s OR (id >= %s AND id < %s) ORDER BY seq"

    def read(conn: psycopg.Connection[Any]) -> list[Promise]:
        return [promise_from_row(r) for r in conn.execute(query, (id, low, high)).fetchall()]

    return store.read(read)


def label(p: Promise) -> str:
    """What a promise is, in a word or two: ``model:lead``, ``tool:search``, ``Task -> x``."""
    if p.kind.value == "message":
        kind = p.tags.get("promissory:type", "message")
        return f"{kind} -> {p.recipient}"
    if p.kind.value == "timer":
        return "timer"
    fp = p.fingerprint or p.kind.value
    parts = fp.split(":")
    if parts[0] == "step" and len(parts) >= 2:
        name = ":".join(parts[1:-1]) if len(parts) > 2 else parts[1]
        return name.rsplit(".", 1)[-1] if "." in name and ":" not in name else name
    return parts[0]


def timeline_rows(promises: list[Promise], root: str) -> list[tuple[Any, ...]]:
    """Rows for a timeline table: id (relative to the root), what, state, times, attempt, data."""
    rows = []
    for p in promises:
        rel = p.id if p.id == root else "…" + p.id[len(root) :]
        what = label(p).replace(root + "/", "…/")
        data = summary(p) if p.state.settled else cell(p.param, 50)
        rows.append(
            (
                rel,
                what,
                p.state.value,
                p.created_at.strftime("%H:%M:%S.%f")[:-3],
                p.settled_at.strftime("%H:%M:%S.%f")[:-3] if p.settled_at else "",
                p.attempt or "",
                data,
            )
        )
    return rows


def summary(p: Promise) -> str:
    """A step's value in a few words: a model's text or the tools it called, or the value."""
    try:
        value: Any = p.value_as()
    except Exception:
        return cell(p.value, 60)
    if isinstance(value, dict) and isinstance(value.get("message"), dict):
        parts = value["message"].get("parts", [])
        calls = [x.get("name") for x in parts if x.get("type") == "tool_call"]
        text = "".join(x.get("text", "") for x in parts if x.get("type") == "text")
        if calls:
            return "calls " + ", ".join(map(str, calls))
        return cell(text, 60)
    if isinstance(value, dict) and "type" in value and "message" in value:
        return cell(f"{value['type'].rsplit('.', 1)[-1]}: {value['message']}", 60)
    if isinstance(value, dict) and "output" in value:
        return cell(value["output"], 60)
    return cell(p.value, 60)
