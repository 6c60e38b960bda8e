"""A saved dense DatasetDict (train/test): `open_dense` reads the split asked for, as the pair
reader does with `data.split`; it raised AttributeError ('DatasetDict' has no 'features')."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmalign.config import InputError
from mmalign.data.dense import DENSE_SCORES
from mmalign.reward_model.data import open_dense


def _part(value: int, n: int):
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [f"p{i}" for i in range(n)],
        "image": [Image.new("RGB", (4, 4), (value, 0, 0)) for _ in range(n)],
        "heatmaps": [np.zeros((2, 4, 4), np.float32).tolist() for _ in range(n)],
        **{k: [value / 255] * n for k in DENSE_SCORES},
    })  # fmt: skip


def test_a_saved_dataset_dict_reads_the_split_asked_for(tmp_path):
    from datasets import DatasetDict

    DatasetDict({"train": _part(51, 3), "test": _part(204, 2)}).save_to_disk(tmp_path / "dd")
    train, _ = open_dense(str(tmp_path / "dd"), "train")
    test, _ = open_dense(str(tmp_path / "dd"), "test")
    assert (len(train), len(test)) == (3, 2)
    assert train[0].scores["overall"] == pytest.approx(0.2)
    assert test[1].scores["overall"] == pytest.approx(0.8)
    with pytest.raises(InputError, match="has splits"):
        open_dense(str(tmp_path / "dd"), "dev")
    # one saved Dataset recording no split is "train" only (check_saved_split; review 4)
    _part(102, 2).save_to_disk(tmp_path / "one")
    assert len(open_dense(str(tmp_path / "one"), "train")[0]) == 2
    with pytest.raises(InputError, match="records no split"):
        open_dense(str(tmp_path / "one"), "test")
