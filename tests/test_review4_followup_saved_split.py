"""`data.split` is honoured for one saved Dataset by the VLM and the dense (reward head) readers.

`open_vlm_pairs` and `open_dense` read a `Dataset.save_to_disk` folder whole whatever the split
asked for, so `split: test` evaluated (or trained) on the rows saved from train. As the
diffusion and Pick-a-Pic readers now do (`pickapic.check_saved_split`): a split recorded in
the folder's state must be the one asked for, and one that records none is "train".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from PIL import Image

from mmalign.config import InputError
from mmalign.data.dense import DENSE_SCORES
from mmalign.reward_model.data import open_dense
from mmalign.vlm.data import open_vlm_pairs


def _text_pairs(n: int, split: str | None) -> Dataset:
    rows = {
        "prompt": [f"question {i}?" for i in range(n)],
        "chosen": [f"a good answer {i}" for i in range(n)],
        "rejected": [f"a bad answer {i}" for i in range(n)],
    }
    return Dataset.from_dict(rows, split=split)


def _dense(n: int, split: str | None) -> Dataset:
    rows = {
        "prompt": [f"p{i}" for i in range(n)],
        "image": [Image.new("RGB", (4, 4), (51, 0, 0)) for _ in range(n)],
        "heatmaps": [np.zeros((2, 4, 4), np.float32).tolist() for _ in range(n)],
        **{k: [0.2] * n for k in DENSE_SCORES},
    }
    plain = Dataset.from_dict(rows)
    return Dataset.from_dict(plain.to_dict(), features=plain.features, split=split)


def test_vlm_a_recorded_split_is_the_only_one_that_opens(tmp_path):
    _text_pairs(3, "test").save_to_disk(str(tmp_path / "saved"))
    assert len(open_vlm_pairs(tmp_path / "saved", "test")[0]) == 3
    with pytest.raises(ValueError, match=r"one saved split, 'test'; .*'train' \(data\.split\)"):
        open_vlm_pairs(tmp_path / "saved", "train")


def test_vlm_a_folder_without_a_recorded_split_is_train_only(tmp_path):
    _text_pairs(2, None).save_to_disk(str(tmp_path / "unnamed"))
    assert len(open_vlm_pairs(tmp_path / "unnamed", "train")[0]) == 2
    with pytest.raises(ValueError, match=r"records no split.*data\.split is 'validation'"):
        open_vlm_pairs(tmp_path / "unnamed", "validation")


def test_vlm_toy_data_is_built_not_read_whatever_the_split():
    rows, _ = open_vlm_pairs("toy:safety", "validation", max_samples=2)
    assert len(rows) == 2


def test_dense_a_recorded_split_is_the_only_one_that_opens(tmp_path):
    _dense(2, "test").save_to_disk(str(tmp_path / "saved"))
    assert len(open_dense(str(tmp_path / "saved"), "test")[0]) == 2
    with pytest.raises(InputError, match=r"dense data: .*one saved split, 'test'.*'train'"):
        open_dense(str(tmp_path / "saved"), "train")


def test_dense_a_folder_without_a_recorded_split_is_train_only(tmp_path):
    _dense(3, None).save_to_disk(str(tmp_path / "unnamed"))
    assert len(open_dense(str(tmp_path / "unnamed"), "train")[0]) == 3
    with pytest.raises(InputError, match=r"records no split.*'test'.*--split"):
        open_dense(str(tmp_path / "unnamed"), "test")  # `mmalign eval dense`'s default split


CARDS = Path(__file__).resolve().parents[1] / "datasets"


def test_every_shipped_card_loads_with_string_filters():
    from mmalign.data.cards import load_card

    for card in sorted(CARDS.glob("*.yaml")):
        assert all(isinstance(f, str) for f in load_card(card).filters), card


def test_a_card_filter_that_yaml_reads_as_a_mapping_is_refused(tmp_path):
    from mmalign.config import ConfigError
    from mmalign.data.cards import load_card

    text = (CARDS / "pickapic_v2.yaml").read_text()
    text = text.replace('  - "an image that does not decode: skipped and counted"',
                        "  - an image that does not decode: skipped and counted")  # fmt: skip
    (tmp_path / "card.yaml").write_text(text)
    with pytest.raises(ConfigError, match="filters must be a list of strings"):
        load_card(tmp_path / "card.yaml")
