"""How the labeling app is installed and imported: as `mmalign_label` (the folder apps/label),
from any folder, once, and only when `mmalign label` runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_app_imports_as_mmalign_label_from_any_folder(tmp_path: Path) -> None:
    code = ("import importlib.util, mmalign_label, mmalign_label.store, mmalign_label.cli\n"
            "print(mmalign_label.__file__)\n"
            "print(importlib.util.find_spec('apps'))")  # fmt: skip
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    where, apps = out.stdout.split()
    assert Path(where) == ROOT / "apps" / "label" / "__init__.py"
    assert apps == "None"  # no generic top-level `apps` is installed


def test_the_app_cannot_be_imported_a_second_time_as_apps_label() -> None:
    # from the repository root the folder is reachable as `apps.label`: refused, so no module
    # is ever loaded twice (two Store classes, two VoteErrors)
    out = _python("import apps.label", ROOT)
    assert out.returncode != 0 and "mmalign_label" in out.stderr


def test_mmalign_imports_the_app_only_for_its_label_command(tmp_path: Path) -> None:
    code = ("import sys, mmalign, mmalign.cli\n"
            "assert not any(m.startswith(('apps', 'mmalign_label')) for m in sys.modules)\n"
            "mmalign.cli.build_parser()\n"
            "print(sorted(m for m in sys.modules if m.startswith(('apps', 'mmalign_label'))))\n"
            "print('gradio' in sys.modules)")  # fmt: skip
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    # the parser needs the command's arguments only; the app itself loads when it runs
    assert out.stdout.split("\n")[:2] == ["['mmalign_label', 'mmalign_label.cli']", "False"]


def _package_folders() -> list[str]:
    """Every package of the checkout (a folder with __init__.py) as the wheel would name it:
    the files git tracks (what a clone builds), or every file outside a git checkout."""
    out = subprocess.run(["git", "ls-files", "mmalign", "apps/label"], cwd=ROOT,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode == 0 and out.stdout:
        files = [Path(f) for f in out.stdout.split()]
    else:
        files = [f.relative_to(ROOT) for d in ("mmalign", "apps/label")
                 for f in (ROOT / d).rglob("__init__.py")]  # fmt: skip
    found = [".".join(f.parent.parts) for f in files if f.name == "__init__.py"]
    return sorted(p.replace("apps.label", "mmalign_label") for p in found)


def test_pyproject_lists_every_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["mmalign_label"] == "apps/label"
    # a package missing from the list would be missing from the wheel (editable installs
    # find it anyway, so only this test notices)
    assert sorted(tool["packages"]) == _package_folders()


def _app_imports() -> dict[str, list[tuple[str, list[str]]]]:
    """Every import in every app module, at any depth (functions, TYPE_CHECKING blocks):
    module -> [(imported module, absolute or `.sibling`, names)]."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted((ROOT / "apps" / "label").glob("*.py")):
        rows = found.setdefault(path.stem, [])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
                if node.level == 0:
                    rows.append((node.module or "", names))
                elif node.module:  # from .store import X
                    rows.append(("." + node.module, names))
                else:  # from . import statements
                    rows.extend(("." + n, []) for n in names)
            elif isinstance(node, ast.Import):
                rows.extend((a.name, []) for a in node.names)
    return found


def test_app_modules_import_each_other_one_way() -> None:
    graph = {m: {i[1:] for i, _ in rows if i.startswith(".")} for m, rows in _app_imports().items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_app_uses_relative_imports_and_no_private_names_of_other_packages() -> None:
    for module, rows in _app_imports().items():
        for imported, names in rows:
            assert not imported.startswith(("apps", "mmalign_label")), (module, imported)
            if not imported.startswith("."):
                private = [n for n in [*imported.split("."), *names] if n.startswith("_")]
                assert not private or imported == "__future__", (module, imported, private)
