"""Review 8: `build_dataset` from Python replaced an earlier build silently (a build deletes the
folder's pairs/, pickapic/ and dense/), while `mmalign toy data KIND --out DIR` refused it
without `--overwrite`. Both now go by one rule (`earlier_build`), checked before anything is
built. The builder is a recorder here: no toy dataset is built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmalign.toy.datasets import BUILDERS, build_dataset


@pytest.fixture
def built(monkeypatch) -> list[Path]:
    """`vqa`'s builder replaced by a recorder of the folders it was asked to build into."""
    seen: list[Path] = []

    def build(out_dir: Any, *, n: int, seed: int) -> dict[str, Any]:
        seen.append(Path(out_dir))
        return {"kind": "vqa", "rows": n}

    monkeypatch.setitem(BUILDERS, "vqa", build)
    return seen


def _earlier(out: Path) -> None:
    (out / "pairs").mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"kind": "safety", "rows": 1}))


def test_an_earlier_build_is_refused_without_overwrite(tmp_path: Path, built) -> None:
    _earlier(tmp_path)
    with pytest.raises(FileExistsError) as err:
        build_dataset("vqa", tmp_path, n=4)
    message = str(err.value)
    assert "already holds an earlier build (a toy 'safety' dataset of 1 row, pairs, " in message
    assert "overwrite=True" in message
    assert built == [] and (tmp_path / "pairs").is_dir()  # nothing built, nothing deleted

    build_dataset("vqa", tmp_path, n=4, overwrite=True)
    assert built == [tmp_path]


def test_a_new_or_unrelated_folder_needs_no_flag(tmp_path: Path, built) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")  # not something a build writes
    build_dataset("vqa", tmp_path / "mine", n=4)
    build_dataset("vqa", tmp_path / "new", n=4)
    assert built == [tmp_path / "mine", tmp_path / "new"]


def test_a_file_is_refused_before_building(tmp_path: Path, built) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        build_dataset("vqa", tmp_path / "f", n=4, overwrite=True)
    assert built == []


def test_the_command_passes_its_flag_on(tmp_path: Path, built, capsys) -> None:
    from mmalign.cli import main

    _earlier(tmp_path / "d")
    argv = ["toy", "data", "vqa", "--n", "4", "--out", str(tmp_path / "d")]
    assert main(argv) == 2
    assert "give --overwrite" in capsys.readouterr().err  # the command's own words
    assert main([*argv, "--overwrite"]) == 0
    assert built == [tmp_path / "d"]
