"""Review 8: tied pairs apart from skipped rows everywhere a build or a read reports them.

A training run's record kept them apart already (`skipped`, `ties: {dropped, kept}`,
`build_skipped`), but a toy build's own summary.json (and `mmalign toy data`'s printout of it)
listed the tied pairs it dropped under `skipped` (`{"tie": 3}`), and the Pick-a-Pic console
report said "skipped 6" with a `tie: 6` line, as if six rows could not be read. No toy dataset
is built here: a builder of a few hand-made rows goes through the real writer (`finish`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from mmalign.data.pickapic import load_pickapic, write_pickapic
from mmalign.toy.datasets import BUILDERS
from mmalign.toy.datasets.common import Built, finish


def _rows(labels: list[float]) -> list[dict[str, Any]]:
    bright, dark = Image.new("RGB", (8, 8), (220, 60, 30)), Image.new("RGB", (8, 8), (20, 20, 20))
    return [{"prompt": f"p{i}", "chosen": bright, "rejected": dark, "label": label}
            for i, label in enumerate(labels)]  # fmt: skip


def _built() -> Built:
    """Two rows (one kept as a tie) of a build that dropped 3 tied pairs and 1 other."""
    return Built(_rows([1.0, 0.5]), "image", skipped=Counter({"tie": 3, "no_visible_flaw": 1}))


def test_summary_json_keeps_ties_apart_from_skipped(tmp_path: Path) -> None:
    summary = finish("pairs", tmp_path, _built(), n=6, seed=0, split="train", options={},
                     started=0.0)  # fmt: skip
    written = json.loads((tmp_path / "summary.json").read_text())
    for s in (summary, written):
        assert s["skipped"] == {"no_visible_flaw": 1}  # no `tie` among the skipped
        assert s["ties"] == {"dropped": 3, "kept": 1}


def test_no_rows_left_names_the_ties_apart(tmp_path: Path) -> None:
    import pytest

    empty = Built([], "image", skipped=Counter({"tie": 4}))
    with pytest.raises(ValueError) as err:
        finish("pairs", tmp_path, empty, n=4, seed=0, split="train", options={}, started=0.0)
    assert "skipped: {}; ties dropped: 4" in str(err.value)


def test_toy_data_command_prints_ties_apart(tmp_path: Path, monkeypatch, capsys) -> None:
    from mmalign.cli import main

    def build(out_dir: Any, *, n: int, seed: int) -> dict[str, Any]:
        return finish("pairs", out_dir, _built(), n=n, seed=seed, split="train", options={},
                      started=0.0)  # fmt: skip

    monkeypatch.setitem(BUILDERS, "pairs", build)
    assert main(["toy", "data", "pairs", "--n", "6", "--out", str(tmp_path / "d")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["skipped"] == {"no_visible_flaw": 1}
    assert printed["ties"] == {"dropped": 3, "kept": 1}


def _write_summary(folder: Path, summary: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_run_record_reads_the_build_ties_back(tmp_path: Path) -> None:
    """`build_skipped` (a run's record of its toy build) still counts the build's ties, read
    from `ties.dropped` now, and from `skipped.tie` in a summary.json written before."""
    from datasets import Dataset

    from mmalign.data.run_record import pairs_record
    from mmalign.data.schema import ValidationReport
    from mmalign.toy.build_record import toy_build
    from mmalign.toy.cache import toy_data_folder

    folder = toy_data_folder("vqa", {"n": 6})  # (a rendered kind: no model weights in its key)
    _write_summary(folder, {"rows": 2, "skipped": {"no_visible_flaw": 1},
                            "ties": {"dropped": 3, "kept": 1}})  # fmt: skip
    built = toy_build("toy:vqa", toy_options={"n": 6})
    assert built is not None and built.skipped == {"no_visible_flaw": 1, "tie": 3}
    rows = Dataset.from_dict({"prompt": ["a", "b"], "label": [1.0, 0.5]})
    record = pairs_record(rows, ValidationReport(total=2, kept=2), built.skipped)
    assert record["build_skipped"] == {"no_visible_flaw": 1, "tie": 3}
    assert record["skipped"] == {} and record["ties"] == {"dropped": 0, "kept": 1}

    older = toy_data_folder("vqa", {"n": 7})
    _write_summary(older, {"rows": 2, "skipped": {"tie": 5}})
    again = toy_build("toy:vqa", toy_options={"n": 7})
    assert again is not None and again.skipped == {"tie": 5}


def test_pickapic_report_says_ties_apart_from_skipped_rows(tmp_path: Path) -> None:
    data = _rows([1.0, 0.5, 0.5, 1.0])
    data[3]["prompt"] = ""  # a row that cannot be read: skipped (missing_caption)
    write_pickapic(data, tmp_path / "pp", "train")
    _, dropped = load_pickapic(tmp_path / "pp", "train", cache_dir=tmp_path / "c")
    text = str(dropped)
    first, *rest = text.splitlines()
    assert first == "pickapic:train: read 4, kept 1, skipped 1; ties: 2 dropped, 0 kept (label 0.5)"
    assert "  missing_caption: 1 (rows 3)" in rest
    assert "  tied pairs dropped: 2 (rows 1, 2)" in rest
    assert not any(line.startswith("  tie:") for line in rest)
    assert dropped.skipped == {"tie": 2, "missing_caption": 1}  # the counts as they were

    _, half = load_pickapic(tmp_path / "pp", "train", tie_policy="half", cache_dir=tmp_path / "c")
    assert str(half).splitlines()[0] == (
        "pickapic:train: read 4, kept 3, skipped 1; ties: 0 dropped, 2 kept (label 0.5)"
    )
    _, none = load_pickapic(tmp_path / "pp", "train", tie_policy="random", cache_dir=tmp_path / "c")
    assert "ties" not in str(none)  # a coin chose each tie's winner: label 1, no tie left
