"""The package's shape: layers whose dependencies point one way, and Redis behind one door.

Every module belongs to one layer (see docs/engine.md); a module imports only from its own
layer or the ones below, type-only imports included. Only the storage layer talks to Redis
(other modules may catch its exceptions), and nothing subclasses or drives arq's worker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hostedjobs"

VOCABULARY, STORAGE, RUNNING, ENGINE, FACADE = range(5)
LAYERS = {
    "exceptions": VOCABULARY,
    "clock": VOCABULARY,
    "durations": VOCABULARY,
    "logs": VOCABULARY,
    "outcomes": VOCABULARY,
    "results": VOCABULARY,
    "context": VOCABULARY,
    "status": VOCABULARY,
    "history": VOCABULARY,
    "concurrency": VOCABULARY,
    "storage": STORAGE,
    "records": RUNNING,
    "wire": RUNNING,
    "serialization": RUNNING,
    "depends": RUNNING,
    "scope": RUNNING,
    "runs": RUNNING,
    "retries": RUNNING,
    "cron": RUNNING,
    "instrumentation": RUNNING,
    "runner": RUNNING,
    "handlers": RUNNING,
    "rates": RUNNING,
    "definitions": ENGINE,
    "commits": ENGINE,
    "health": ENGINE,
    "worker": ENGINE,
    "distributed": ENGINE,
    "startup": ENGINE,
    "hosted": ENGINE,
    "scheduler": ENGINE,
    "eager": ENGINE,
    "tasks": ENGINE,
    "shutdown": ENGINE,
    "control": ENGINE,
    "locks": ENGINE,
    "pauses": ENGINE,
    "schedules": ENGINE,
    "host": FACADE,
    "starlette": FACADE,
    "dashboard": FACADE,
    "cli": FACADE,
    "testing": FACADE,
    "metrics": FACADE,
    "tracing": FACADE,
    "__init__": FACADE,
    "__main__": FACADE,
    "integrations": FACADE,
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _unit(path: Path) -> str:
    """The layer unit of a module: its top-level module or package under hostedjobs/."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(absolute module, line)`` for every import in ``path`` (type-only ones too)."""
    package_parts = ["hostedjobs", *path.relative_to(PACKAGE).parent.parts]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
                if node.module is None:
                    found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    """A module imports nothing from a layer above its own."""
    unit = _unit(path)
    assert unit in LAYERS, f"{unit} has no layer: add it to LAYERS (and docs/engine.md)"
    upward = []
    for module, line in _imports(path):
        parts = module.split(".")
        if parts[0] != "hostedjobs" or len(parts) < 2:
            continue
        # ``from . import __version__`` imports a name of the package itself.
        imported = parts[1] if parts[1] in LAYERS else "__init__"
        if LAYERS[imported] > LAYERS[unit]:
            upward.append(f"line {line}: {module}")
    assert not upward, f"{unit} (layer {LAYERS[unit]}) imports from above: {upward}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_storage_talks_to_redis(path: Path) -> None:
    """Outside hostedjobs.storage, Redis appears only as the exceptions it raises (and arq
    not at all): every command, script and key is the storage layer's."""
    if _unit(path) == "storage":
        return
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    offending = [
        f"line {line}: {module}"
        for module, line in _imports(path)
        if module.split(".")[0] in ("redis", "arq", "hiredis")
        and module != "redis.exceptions"
        and not any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and id(node) in type_only
            and node.lineno == line
            for node in ast.walk(tree)
        )
    ]
    assert not offending, f"{path.name} reaches Redis outside storage: {offending}"


def test_no_two_modules_import_each_other() -> None:
    """The module graph has no cycle, type-only imports included (a layer's modules too)."""
    names = {
        ".".join(["hostedjobs", *path.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(
            ".__init__"
        ): path
        for path in _modules()
    }
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = set()
        for module, _ in _imports(path):
            while module and module not in names:
                module = module.rpartition(".")[0]  # ``from .storage import Store``
            # A package's __init__ re-exports its modules: importing it is not a dependency
            # of those modules on each other.
            if module and module != name and not name.startswith(f"{module}."):
                targets.add(module)
        graph[name] = targets
    state: dict[str, str] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open" and not cycle:
                cycle.extend([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycle, " -> ".join(cycle)
