"""Data paths as a user writes them, and the messages when a data set cannot be fetched.

- `data.path: ~/pickapic` (a recipe, or `data.path=~/x` on the command line, where no shell
  expands `~`): the existence check expanded it, the loaders did not, so a local folder was
  looked up on the hub ("could not be downloaded ... `hf download ~/pairs`").
- A local Pick-a-Pic shard folder (`write_pickapic`, the toy builders, the labeling app's
  export) with a split other than train/test/validation (`test_unique`, `heldout`) failed in
  `open_pairs` with "Unknown split" from `load_dataset(folder)`, though the Pick-a-Pic reader
  it hands the rows to reads that split.
- A data set that cannot be downloaded was answered with `hf download ID`, which names a
  model repo; a data set needs `--repo-type dataset`.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

import mmalign.data.pickapic_files as pickapic_files
import mmalign.diffusion.data as diffusion_data
from mmalign.config import InputError
from mmalign.data.pickapic import load_pickapic, write_pickapic
from mmalign.data.schema import write_pairs
from mmalign.diffusion.data import open_pairs
from mmalign.vlm.data import open_vlm_pairs


def _rows(n: int) -> list[dict]:
    grey = [Image.new("RGB", (8, 8), (v, v, v)) for v in (200, 20)]
    return [{"prompt": f"p{i}", "chosen": grey[0], "rejected": grey[1]} for i in range(n)]


def test_a_home_relative_data_path_is_read_locally(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_pairs(_rows(2), tmp_path / "pairs", "image")
    write_pickapic(_rows(3), tmp_path / "pick", "train")
    (tmp_path / "vlm.json").write_text(
        json.dumps([{"prompt": "q", "chosen": "a", "rejected": "b"}])
    )
    assert len(open_pairs("~/pairs", "train")[0]) == 2
    assert len(open_pairs("~/pick", "train")[0]) == 3
    assert len(load_pickapic("~/pick", "train")[0]) == 3
    assert len(open_vlm_pairs("~/vlm.json", "train")[0]) == 1


@pytest.mark.parametrize("split", ["test_unique", "heldout", "dev"])
def test_a_pickapic_folder_opens_any_split_it_has(tmp_path, split):
    write_pickapic(_rows(3), tmp_path, split)
    write_pickapic(_rows(2), tmp_path, "train")
    pairs, report = open_pairs(str(tmp_path), split)
    assert len(pairs) == 3 and report.kept == 3
    with pytest.raises(ValueError, match=r"split 'test' not found.*available splits"):
        open_pairs(str(tmp_path), "test")


def _no_network(*args, **kwargs):
    raise ConnectionError("Couldn't reach the hub")  # what `datasets` meets with no network


@pytest.mark.parametrize("reader", ["open_pairs", "load_pickapic", "open_vlm_pairs"])
def test_a_dataset_that_cannot_be_downloaded_gets_a_dataset_download_hint(monkeypatch, reader):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the loader is left to try the hub
    monkeypatch.setattr(diffusion_data, "load_dataset", _no_network)
    monkeypatch.setattr(pickapic_files, "load_dataset", _no_network)
    monkeypatch.setattr("datasets.load_dataset", _no_network)  # open_vlm_pairs imports it late
    call = {"open_pairs": open_pairs, "load_pickapic": load_pickapic,
            "open_vlm_pairs": open_vlm_pairs}[reader]  # fmt: skip
    with pytest.raises(InputError, match=r"`hf download org/prefs --repo-type dataset`"):
        call("org/prefs", "train")
