"""How the labeling app is installed and imported: as `mmalign_label` (the folder apps/label),
from any folder, once, and only when `mmalign label` runs."""

from __future__ import annotations

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


def test_pyproject_lists_every_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["mmalign_label"] == "apps/label"
    app = ["mmalign_label" + p.removeprefix("label") for p in find_packages(ROOT / "apps")]
    # a package missing from the list would be missing from the wheel (editable installs
    # find it anyway, so only this test notices)
    assert sorted(tool["packages"]) == sorted(find_packages(ROOT, include=["mmalign*"]) + app)
