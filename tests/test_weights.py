"""Cache keys follow the weights: a rebuilt model never reuses data its predecessor made."""

from __future__ import annotations

import os

from mmalign.diffusion.data import toy_data_folder
from mmalign.weights import weight_files


def _pipeline_folder(root):
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 10)
    (root / "unet" / "config.json").write_text("{}")
    (root / "model_index.json").write_text("{}")
    return root


def test_weight_files_lists_weights_only_and_recurses_on_request(tmp_path):
    folder = _pipeline_folder(tmp_path / "pipe")
    assert weight_files(folder) == []  # the top level holds no weights
    (name, size, _mtime), = weight_files(folder, recursive=True)
    assert (name, size) == ("unet/diffusion_pytorch_model.safetensors", 10)
    assert weight_files(tmp_path / "missing") == weight_files("org/hub-id") == []


def test_toy_data_of_a_sampled_kind_is_rebuilt_when_the_model_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    model = str(_pipeline_folder(tmp_path / "pipe"))
    options = {"n": 8}
    before = toy_data_folder("pairs", options, model)
    rendered = toy_data_folder("vqa", options, model)
    assert toy_data_folder("pairs", options, model) == before  # reading changes nothing
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"y" * 10)
    os.utime(weights, ns=(1, 1))  # a rebuild: same size, other mtime
    assert toy_data_folder("pairs", options, model) != before
    # Rendered kinds never sample a model: their key ignores its weights.
    assert toy_data_folder("vqa", options, model) == rendered
    assert toy_data_folder("pairs", {"n": 9}, model) != toy_data_folder("pairs", options, model)
