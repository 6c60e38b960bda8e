"""The import graph of mmalign and its labeling app runs one way.

Every import counts, those inside functions included (a lazy import still ties two modules
together). The graph must have no cycle, no module may import a private (underscore) name from
another package, and `mmalign` reaches the labeling app only through the `label` subcommand's
registration in `mmalign/cli.py`, inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the name its modules are imported under (the app installs as `mmalign_label`).
PACKAGES = {ROOT / "mmalign": "mmalign", ROOT / "apps" / "label": "mmalign_label"}
APP = "mmalign_label"
ALLOWED_APP_EDGES = {"mmalign.cli"}  # registers `mmalign label` lazily


def _modules() -> dict[str, Path]:
    found = {}
    for folder, name in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _known(name: str) -> str | None:
    """The project module `name` refers to (a name inside a module maps to the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports() -> list[tuple[str, str, str | None, bool]]:
    """(importer, imported module, name taken from it or None, at module level)."""
    edges = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (target := _known(alias.name)) is not None:
                        edges.append((module, target, None, id(node) in top))
            elif isinstance(node, ast.ImportFrom):
                base = _target(module, path, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in MODULES:  # `from package import submodule`
                        edges.append((module, sub, None, id(node) in top))
                    elif (target := _known(base)) is not None:
                        edges.append((module, target, alias.name, id(node) in top))
    return edges


def _package(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_project():
    assert {"mmalign.cli", "mmalign.losses", "mmalign.toy.world", f"{APP}.store"} <= set(MODULES)
    assert len(_imports()) > 200


def test_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, _ in _imports():
        graph[importer].add(imported)
        graph[imported]
    # A package's own `__init__` importing its submodules is how Python packages work; a
    # submodule importing its package back is the cycle, and it is counted.
    assert _cycles(graph) == []


def test_no_private_name_across_packages():
    bad = [
        f"{importer} imports {name} from {imported}"
        for importer, imported, name, _ in _imports()
        if name
        and name.startswith("_")
        and not name.startswith("__")
        and _package(importer) != _package(imported)
    ]
    assert bad == []


def test_mmalign_reaches_the_app_only_from_the_label_subcommand():
    edges = [(a, b, top) for a, b, _, top in _imports() if a.startswith("mmalign.")]
    to_app = [(a, b, top) for a, b, top in edges if b.split(".")[0] == APP]
    assert {a for a, _, _ in to_app} <= ALLOWED_APP_EDGES
    assert not any(top for _, _, top in to_app), "the app must be imported inside a function"


def test_importing_mmalign_loads_no_app_module():
    code = (
        "import sys, mmalign, mmalign.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('apps', 'mmalign_label')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
