"""The package's shape: public names pinned, and imports that only point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import promissory
import promissory.store

PACKAGE = Path(promissory.__file__).resolve().parent

# Each layer and the layers it must not import (ARCHITECTURE.md, "Layers").
FORBIDDEN = {
    "store": {"actors", "runtime", "agents", "cli"},
    "actors": {"runtime", "agents", "cli"},
    "runtime": {"agents", "cli"},
    "agents": {"cli"},
}


def imported_layers(path: Path) -> set[str]:
    """The promissory subpackages a module imports, absolute or relative."""
    tree = ast.parse(path.read_text())
    rel_parts = path.relative_to(PACKAGE).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "promissory" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "promissory" and len(parts) > 1:
                    found.add(parts[1])
            else:
                base = list(rel_parts[:-1])
                up = node.level - 1
                base = base[: len(base) - up] if up else base
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                else:
                    found.update(alias.name for alias in node.names)
    return found


def test_layers_import_only_downwards() -> None:
    for layer, forbidden in FORBIDDEN.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            bad = imported_layers(path) & forbidden
            assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_store_public_names_are_pinned() -> None:
    assert sorted(promissory.store.__all__) == sorted(
        [
            "SCHEMA_VERSION",
            "ActorCancel",
            "EmbeddedServer",
            "ErrorInfo",
            "Outcome",
            "Page",
            "Promise",
            "PromiseKind",
            "PromiseState",
            "Store",
            "Subscription",
            "Timeout",
            "decode",
            "encode",
            "error_info",
            "home",
            "rebuild_error",
            "resolve_dsn",
        ]
    )


def test_every_public_name_exists() -> None:
    for module in (promissory, promissory.store, promissory.errors):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()
