"""The package's shape: public names pinned, and imports that only point down the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import promissory
import promissory.agents
import promissory.runtime
import promissory.store

PACKAGE = Path(promissory.__file__).resolve().parent

# Each layer and the layers it must not import (ARCHITECTURE.md, "Layers").
FORBIDDEN = {
    "store": {"actors", "protocol", "runtime", "agents", "cli", "ui"},
    "protocol": {"actors", "runtime", "agents", "cli", "ui"},
    "actors": {"runtime", "agents", "cli", "ui"},
    "runtime": {"agents", "cli", "ui"},
    "agents": {"cli", "ui"},
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


def private_imports_across_packages(path: Path) -> list[str]:
    """Imports in ``path`` of another package's private module (``..store._actors``)."""
    tree = ast.parse(path.read_text())
    rel_parts = path.relative_to(PACKAGE).parts
    own = rel_parts[0] if len(rel_parts) > 1 else None
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "promissory":
                    continue
                parts = parts[1:]
            else:
                base = list(rel_parts[:-1])
                up = node.level - 1
                base = base[: len(base) - up] if up else base
                parts = base + (node.module.split(".") if node.module else [])
            if len(parts) >= 2 and parts[0] != own and parts[1].startswith("_"):
                bad.append(".".join(parts))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "promissory" and len(parts) > 2 and parts[2].startswith("_"):
                    if parts[1] != own:
                        bad.append(alias.name)
    return bad


def test_packages_meet_only_at_their_faces() -> None:
    # A package uses another only through its __init__ (its __all__ for users, its
    # __internal__ for the layers above), never through its private modules.
    for path in PACKAGE.rglob("*.py"):
        bad = private_imports_across_packages(path)
        assert not bad, f"{path.relative_to(PACKAGE)} imports private modules {bad}"


def test_every_internal_name_exists_and_is_not_also_public() -> None:
    for name in ("store", "actors", "agents"):
        module = __import__(f"promissory.{name}", fromlist=["__internal__"])
        internal = getattr(module, "__internal__", [])
        for item in internal:
            assert hasattr(module, item), f"promissory.{name}.{item}"
        assert not set(internal) & set(module.__all__), name


def test_store_public_names_are_pinned() -> None:
    assert sorted(promissory.store.__all__) == sorted(
        [
            "SCHEMA_VERSION",
            "STORE_FAULTS",
            "ActorCancel",
            "EmbeddedServer",
            "ErrorInfo",
            "EventKind",
            "Expectation",
            "Forgotten",
            "Outcome",
            "Page",
            "Promise",
            "PromiseKind",
            "PromiseState",
            "Schedule",
            "Store",
            "Subscription",
            "Timeout",
            "decode",
            "encode",
            "error_info",
            "home",
            "rebuild_error",
            "register_error",
            "resolve_dsn",
        ]
    )


def test_the_top_level_and_ui_public_names_are_pinned() -> None:
    import promissory.ui

    assert sorted(promissory.ui.__all__) == ["ServeError", "create_app", "serve"]
    for name in ("enable_tracing", "disable_tracing", "tracing_enabled"):
        assert name in promissory.__all__


def test_the_protocol_public_names_are_pinned() -> None:
    import promissory.protocol

    assert sorted(promissory.protocol.__all__) == [
        "DEFAULT_PORT",
        "KINDS",
        "ProtocolServer",
        "TOKEN_ENV",
        "VERSION",
        "answer",
        "check_address",
        "create_app",
        "serve",
    ]
    assert promissory.ProtocolServer is promissory.protocol.ProtocolServer


def test_tracing_imports_no_opentelemetry_at_import_time() -> None:
    tree = ast.parse((PACKAGE / "_tracing.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith("opentelemetry")]


def test_every_public_name_exists() -> None:
    for module in (promissory, promissory.store, promissory.errors):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


# Exceptions that may live outside promissory/errors.py: control-flow signals (BaseException,
# never stored, never an error) and the CLI's own, which turn into exit codes and never leave it.
# Control flow, not errors: a handler's wait or cancel, the end of a replay, and a spawn_ask's
# one-statement write finding its ids taken (Runtime.spawn_ask then takes the slower way).
SIGNALS = {"Suspend", "Canceled", "EndOfJournal", "Occupied"}
CLI_OWN = {"CommandError", "UsageError", "TargetError", "TargetFailedError"}
TEST_OWN = {"CrashFailure"}  # an AssertionError: a crash test's failed check, shown by pytest
# Private signals caught in the module that raises them (a web page's 404 and 400, a forget's
# "wait for the family to end"): they never reach a caller.
PRIVATE = {"_NotFound", "_BadForm", "_StillRunning"}


def test_every_error_class_lives_in_promissory_errors() -> None:
    strays = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
            looks_like_error = any(b.endswith(("Error", "Exception")) for b in bases)
            if looks_like_error and node.name not in SIGNALS | CLI_OWN | TEST_OWN | PRIVATE:
                strays.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert not strays, strays


def test_every_error_derives_from_the_one_root() -> None:
    import promissory.errors

    for name in promissory.errors.__all__:
        assert issubclass(getattr(promissory.errors, name), promissory.errors.PromissoryError)


def test_the_package_root_exports_what_the_readme_and_architecture_import_from_it() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    imported: set[str] = set()
    for block in readme.split("```python")[1:]:
        for node in ast.walk(ast.parse(block.split("```")[0])):
            if isinstance(node, ast.ImportFrom) and node.module == "promissory":
                imported.update(alias.name for alias in node.names)
    assert "Agent" in imported  # the first example
    missing = sorted(name for name in imported if name not in promissory.__all__)
    assert not missing, missing
    from promissory import Agent, Runtime, tool  # ARCHITECTURE.md's user view

    assert (Agent, Runtime, tool) == (
        promissory.agents.Agent,
        promissory.runtime.Runtime,
        promissory.agents.tool,
    )


def test_input_and_definition_errors_are_promissory_errors_that_still_match_the_builtins() -> None:
    import promissory.errors as errors
    from promissory import ChildSpec, Restart, RetryPolicy
    from promissory.agents import MaxTurns

    for make in (
        lambda: RetryPolicy(max_attempts=0),
        lambda: ChildSpec(restart=Restart.PERMANENT, significant=True),
        lambda: MaxTurns(0),
    ):
        try:
            make()
        except errors.InvalidInputError as exc:
            assert isinstance(exc, ValueError)
        else:
            raise AssertionError("accepted")
    assert issubclass(errors.InvalidDefinitionError, TypeError)
    assert issubclass(errors.AgentNotFoundError, LookupError)


def _runtime_imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports when it runs: at the top or inside a function,
    but not under ``if TYPE_CHECKING`` (those are for the type checker alone)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            if f"{target}.{alias.name}" in modules:
                found.add(f"{target}.{alias.name}")
            elif target in modules:
                found.add(target)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    # Imports inside functions count (they hide a circle, they do not untie it); __init__
    # modules are the packages' faces and are left out.
    paths = {
        "promissory." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py"
    }
    graph = {m: _runtime_imports(p, m, set(paths)) for m, p in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph.get(current, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted(m for m in graph if reaches(m, m))
    assert not circles, circles


def test_no_two_modules_share_a_name() -> None:
    names = [p.name for p in PACKAGE.rglob("_*.py") if p.name != "__init__.py"]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
