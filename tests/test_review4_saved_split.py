"""`data.split` is honoured for one saved Dataset (`Dataset.save_to_disk`, not a DatasetDict).

`open_pairs` read such a folder whole whatever the split: `split: test` trained on the file
saved from the train split. As the Pick-a-Pic reader does, a split recorded in the folder's
state must be the one asked for; a folder that records none holds one unnamed split, which
`datasets` calls "train" (as `load_dataset` names data files given without splits).
"""

from __future__ import annotations

import pytest
from datasets import Dataset
from PIL import Image

from mmalign.data.pickapic import load_pickapic, write_pickapic
from mmalign.data.schema import validate_rows
from mmalign.diffusion.data import open_pairs


def _pairs(n: int, split: str | None) -> Dataset:
    rows = {
        "prompt": [f"p{i}" for i in range(n)],
        "chosen": [Image.new("RGB", (8, 8), "red")] * n,
        "rejected": [Image.new("RGB", (8, 8), "blue")] * n,
    }
    checked, _ = validate_rows(Dataset.from_dict(rows), "image")
    return Dataset.from_dict(checked.to_dict(), features=checked.features, split=split)


def test_a_recorded_split_is_the_only_one_that_opens(tmp_path):
    _pairs(3, "train").save_to_disk(str(tmp_path / "saved"))
    assert len(open_pairs(str(tmp_path / "saved"), "train")[0]) == 3
    with pytest.raises(ValueError, match=r"one saved split, 'train'; .*'test' \(data\.split\)"):
        open_pairs(str(tmp_path / "saved"), "test")


def test_a_folder_without_a_recorded_split_is_train_only(tmp_path):
    _pairs(2, None).save_to_disk(str(tmp_path / "unnamed"))
    assert len(open_pairs(str(tmp_path / "unnamed"), "train")[0]) == 2
    with pytest.raises(ValueError, match=r"records no split.*data\.split is 'test'"):
        open_pairs(str(tmp_path / "unnamed"), "test")


def test_the_pickapic_reader_follows_the_same_rule(tmp_path):
    write_pickapic(
        [{"prompt": "p", "chosen": Image.new("RGB", (8, 8), "red"),
          "rejected": Image.new("RGB", (8, 8), "blue")}],
        tmp_path / "shards", "train",
    )  # fmt: skip
    from datasets import load_dataset

    raw = load_dataset("parquet", data_dir=str(tmp_path / "shards"), split="train",
                       cache_dir=str(tmp_path / "c"))  # fmt: skip
    Dataset.from_dict(raw.to_dict(), features=raw.features).save_to_disk(str(tmp_path / "pp"))
    assert load_pickapic(tmp_path / "pp", "train")[1].kept == 1
    for read in (load_pickapic, open_pairs):
        with pytest.raises(ValueError, match=r"records no split.*data\.split is 'validation'"):
            read(str(tmp_path / "pp"), "validation")


def test_toy_data_is_built_not_read_and_keeps_its_split(tmp_path):
    """toy:<kind> is built for the run (its options choose the prompts), whatever split the
    recipe names: unchanged."""
    options = {"n": 4, "rejected_source": "render", "progress": False}
    rows, _ = open_pairs("toy:style", "validation", toy_options=options)
    assert len(rows) == 4
