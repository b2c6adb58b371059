"""Reading the store for people: supervision trees, timelines, listings, step labels."""

from __future__ import annotations

from typing import Any

import msgspec

from ..actors import TYPE_TAG
from ..store import ACTOR_WORDS, MAX_PAGE, Promise, PromiseKind, Store, TreeRow
from ._table import cell, printable

ACTOR_STATUSES = ACTOR_WORDS
"""The words ``tree`` and ``show`` use for where an actor is, and what each means."""

MAX_LIMIT = MAX_PAGE
"""The largest ``--limit`` a listing takes."""


class TreeNode:
    """One actor in a printed tree."""

    def __init__(self, row: TreeRow) -> None:
        self.id: str = row.id
        self.parent: str | None = row.parent
        self.kind: str = row.kind
        self.status: str = row.status
        self.restarts: int = row.restarts
        self.pending: int = row.pending
        self.node: str | None = row.node
        self.hostable: bool = row.hostable
        self.children: list[TreeNode] = []

    def as_json(self) -> dict[str, Any]:
        """The node and its children as plain data."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "restarts": self.restarts,
            "pending": self.pending,
            "node": self.node,
            "waiting_for": None if self.hostable else f"a node that hosts {self.kind}",
            "children": [c.as_json() for c in self.children],
        }


def load_trees(
    store: Store, root: str | None, *, status: str | None = None, limit: int = MAX_LIMIT
) -> tuple[list[TreeNode], bool]:
    """The supervision trees (all, or the one under ``root`` by parent links), children in
    start order; with ``status``, only the actors in that status (one whose parent is not
    shown heads a tree of its own); at most ``limit`` actors. Also says whether some were
    left out.
    """
    rows = store.actor_trees(root, status=status, limit=limit + 1)
    more = len(rows) > limit
    nodes = {r.id: TreeNode(r) for r in rows[:limit]}
    roots: list[TreeNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent) if node.parent and node.id != root else None
        if parent is not None:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots, more


def render_trees(roots: list[TreeNode]) -> str:
    """Trees as indented text with status, restarts and pending messages."""
    lines: list[str] = []

    def walk(node: TreeNode, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        status = node.status
        if node.status == "unhosted" and not node.hostable:
            status = f"unhosted: waiting for a node that hosts {printable(node.kind)}"
        elif node.node is not None and node.status not in ("stopped", "failed"):
            status = f"{node.status} on {printable(node.node)}"
        detail = f"{status}, restarts {node.restarts}, pending {node.pending}"
        lines.append(
            f"{prefix}{branch}{printable(node.id)}  [{printable(_short_kind(node.kind))}] {detail}"
        )
        child_prefix = prefix + ("" if top else ("    " if last else "│   "))
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, False)

    for root in roots:
        walk(root, "", True, True)
    return "\n".join(lines) if lines else "(no actors)"


def load_actor(store: Store, id: str) -> dict[str, Any] | None:
    """One actor as ``show`` prints it: status, incarnation, node, mailbox and state."""
    detail = store.actor_detail(id)
    if detail is None:
        return None
    actor = msgspec.structs.asdict(detail)
    actor["stored_status"] = detail.stored_status
    return actor


def render_actor(actor: dict[str, Any]) -> str:
    """An actor as labelled lines, its state snapshot last."""
    node = actor["node"]
    where = "nobody" if node is None else f"{node} ({'live' if actor['hosted'] else 'gone'})"
    lines = [
        ("actor", actor["id"]),
        ("kind", actor["kind"]),
        (
            "status",
            f"{actor['status']}: waiting for a node that hosts {actor['kind']}"
            if actor["status"] == "unhosted" and not actor["hostable"]
            else f"{actor['status']}: {ACTOR_STATUSES.get(actor['status'], '')}",
        ),
        ("incarnation", f"{actor['incarnation']} (restarts so far; epoch {actor['epoch']})"),
        ("hosted by", where),
        ("parent", actor["parent"] or "none (top level)"),
        ("children", actor["children"]),
        ("pending", f"{actor['pending']} message(s)"),
        ("created", actor["created_at"].isoformat(timespec="seconds")),
        ("updated", actor["updated_at"].isoformat(timespec="seconds")),
    ]
    if actor["restart_at"] is not None:
        lines.append(("restart at", actor["restart_at"].isoformat(timespec="seconds")))
    text = "\n".join(f"{k + ':':<12} {printable(str(v))}" for k, v in lines)
    state = actor["state"]
    if state is None:
        return text + "\nstate:       none kept yet"
    pretty = msgspec.json.format(bytes(state), indent=2).decode()
    return text + "\nstate:\n" + printable(pretty, newlines=True)


def _short_kind(kind: str) -> str:
    return kind.rsplit(":", 1)[-1]


def timeline(store: Store, id: str) -> list[Promise]:
    """A promise and every promise under it, in creation order."""
    return store.timeline(id)


def label(p: Promise) -> str:
    """What a promise is, in a word or two: ``model:lead``, ``tool:search``, ``Task -> x``."""
    if p.kind is PromiseKind.MESSAGE:
        message_type = p.tags.get(TYPE_TAG, "message")
        return f"{message_type} -> {p.recipient}"
    if p.kind is PromiseKind.TIMER:
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


def fork_links(store: Store, run: Promise) -> list[str]:
    """Lines linking the run ``run`` with its source (if it is a fork) and its forks."""
    lines = []
    fork = _fork_of(run)
    if fork is not None:
        changed = [k for k in ("prompt", "model", "tools") if fork.get(k) is not None]
        lines.append(
            f"forked from {fork.get('source')} at step {fork.get('at')}"
            + (f" ({', '.join(changed)} changed)" if changed else "")
        )
    for p in store.search(prefix=run.id + "~fork").items:
        made = _fork_of(p)
        if made is not None and made.get("source") == run.id:
            lines.append(f"forked as {p.id} at step {made.get('at')} ({p.state.value})")
    return lines


def _fork_of(run: Promise) -> dict[str, Any] | None:
    try:
        param = run.param_as(dict)
    except Exception:
        return None
    fork = param.get("fork") if isinstance(param, dict) else None
    return fork if isinstance(fork, dict) else None
