"""Pick-a-Pic review 2: one split saved with `Dataset.save_to_disk` (the natural way to keep a
copy of `load_dataset("yuvalkirstain/pickapic_v2", split=...)`) is read, by the reader and by
the diffusion recipe's `open_pairs`."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, load_dataset, load_from_disk
from PIL import Image

from mmalign.data.pickapic import load_pickapic, pickapic_prompts, write_pickapic
from mmalign.diffusion.data import open_pairs


def _rows(n: int) -> list[dict]:
    red, blue = Image.new("RGB", (8, 8), (220, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 220))
    out = [{"prompt": f"p{i}", "chosen": red, "rejected": blue} for i in range(n)]
    out[-1]["label"] = 0.5  # one tie
    return out


def _saved_split(tmp_path):
    write_pickapic(_rows(4), tmp_path / "pp", "validation")
    ds = load_dataset(
        "parquet",
        data_files={"validation": str(tmp_path / "pp" / "*.parquet")},
        split="validation",
        cache_dir=str(tmp_path / "c"),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    return tmp_path / "saved"


def test_one_saved_split_is_read_with_its_ties_counted(tmp_path):
    saved = _saved_split(tmp_path)
    pairs, report = load_pickapic(saved, "validation")
    assert (report.total, report.kept, report.skipped) == (4, 3, {"tie": 1})
    reds = [np.asarray(p["chosen"].convert("RGB"))[0, 0, 0] > 150 for p in pairs]
    assert reds == [True] * 3  # the winner is chosen, whichever of jpg_0 / jpg_1 holds it
    stream, lazy = load_pickapic(saved, "validation", streaming=True)
    assert len(list(stream)) == 3 and lazy.skipped == {"tie": 1}
    assert pickapic_prompts(saved, "validation") == ["p0", "p1", "p2", "p3"]


def test_open_pairs_reads_one_saved_pickapic_split(tmp_path):
    saved = _saved_split(tmp_path)
    pairs, report = open_pairs(str(saved), "validation", tie_policy="half")
    assert len(pairs) == 4 and report.kept == 4
    assert sorted(pairs["label"]) == [0.5, 1.0, 1.0, 1.0]


def test_a_saved_split_never_stands_in_for_another(tmp_path):
    saved = _saved_split(tmp_path)  # its state records split "validation"
    with pytest.raises(ValueError, match=r"holds one saved split, 'validation'; asked for split "
                       r"'test_unique'"):  # fmt: skip
        pickapic_prompts(saved, "test_unique")
    with pytest.raises(ValueError, match="asked for split 'train'"):
        open_pairs(str(saved), "train")
    unnamed = Dataset.from_dict(load_from_disk(str(saved)).to_dict())  # no split recorded
    unnamed.save_to_disk(str(tmp_path / "unnamed"))
    assert load_pickapic(tmp_path / "unnamed", "train")[1].kept == 3
