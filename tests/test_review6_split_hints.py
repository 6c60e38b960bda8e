"""Split names a user gets wrong are answered with what the data holds: a RichHF-18K folder
names its .tfrecord files (not only the release's three names) with a did-you-mean, and a
saved DatasetDict of dense rows suggests the closest split."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from mmalign.config import InputError
from mmalign.data.richhf import tfrecord_path
from mmalign.reward_model.data import _saved_split


def test_richhf_folder_names_its_files_and_the_closest(tmp_path: Path) -> None:
    (tmp_path / "test.tfrecord").write_bytes(b"")
    (tmp_path / "dev.tfrecord").write_bytes(b"")
    with pytest.raises(InputError) as err:
        tfrecord_path(tmp_path, "tset")
    text = str(err.value)
    assert "it holds dev, test" in text
    assert "did you mean 'test'?" in text
    assert tfrecord_path(tmp_path, "dev") == tmp_path / "dev.tfrecord"


def test_richhf_empty_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"it holds no \.tfrecord file"):
        tfrecord_path(tmp_path, "test")


def test_dense_dataset_dict_suggests_a_split(tmp_path: Path) -> None:
    rows = Dataset.from_dict({"prompt": ["a"]})
    DatasetDict({"train": rows, "validation": rows}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(InputError, match="did you mean 'validation'"):
        _saved_split(tmp_path / "d", "validaton")
