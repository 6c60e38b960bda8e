"""Toy data builds, as a newcomer met them:

- the summary.json of a cached toy build (`toy:<kind>`, built into `<folder>.partial` and then
  renamed) recorded the `.partial` paths, which no longer exist;
- `mmalign toy data KIND --out DIR` over an earlier build replaced it silently (another kind
  too, its Pick-a-Pic copy deleted): refused now unless `--overwrite`, which says on stderr
  what it replaced and what else in DIR stays;
- `--model toy:flow` for a rendered kind was answered "'vqa' has no option 'model'", naming an
  option the user never gave.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmalign.cli import main
from mmalign.toy.cache import toy_pairs


def test_a_cached_build_records_its_final_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    pairs = toy_pairs("vqa", {"n": 4})
    summary = json.loads((pairs.parent / "summary.json").read_text())
    assert summary["paths"] == {
        "pairs": str(pairs),
        "summary": str(pairs.parent / "summary.json"),
    }
    assert not any(".partial" in p for p in summary["paths"].values())
    assert all(Path(p).exists() for p in summary["paths"].values())


def _build(out: Path, kind: str, *extra: str) -> int:
    return main(["toy", "data", kind, "--n", "4", "--out", str(out), *extra])


def test_an_earlier_build_is_replaced_only_with_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "data"
    assert _build(out, "vqa") == 0
    (out / "notes.txt").write_text("mine")  # something of the user's beside the build
    before = (out / "summary.json").read_text()
    capsys.readouterr()

    assert _build(out, "safety") == 2
    err = capsys.readouterr().err
    assert f"--out {out} already holds an earlier build" in err
    assert "toy 'vqa' dataset of 4 rows" in err and "--overwrite" in err
    assert (out / "summary.json").read_text() == before  # untouched

    assert _build(out, "safety", "--overwrite") == 0
    err = capsys.readouterr().err
    assert f"replacing the earlier build in {out} (a toy 'vqa' dataset of 4 rows" in err
    assert "left as they are: notes.txt" in err
    assert json.loads((out / "summary.json").read_text())["kind"] == "safety"
    assert (out / "notes.txt").read_text() == "mine"


def test_an_empty_or_new_out_folder_needs_no_flag(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    assert _build(tmp_path / "empty", "vqa") == 0
    assert _build(tmp_path / "new" / "deeper", "vqa") == 0
    assert "replacing" not in capsys.readouterr().err


def test_out_that_is_a_file_is_named(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    assert _build(tmp_path / "file", "vqa") == 2
    assert f"--out {tmp_path / 'file'} is a file" in capsys.readouterr().err


def test_model_for_a_rendered_kind_names_the_flag(tmp_path: Path, capsys):
    assert _build(tmp_path / "o", "vqa", "--model", "toy:flow") == 2
    err = capsys.readouterr().err
    assert "--model toy:flow: toy data vqa is rendered, not sampled from a model" in err
    assert "--model is for pairs, style, users" in err
    assert "no option 'model'" not in err
    assert not (tmp_path / "o").exists()
