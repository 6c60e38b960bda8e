"""The toy data cache key follows the weights of the model a builder samples, whether that
model comes as the `model` argument or as a `model` option (`data.toy: {model: ...}`)."""

from __future__ import annotations

import os

from mmalign.toy.cache import toy_data_folder


def test_a_model_option_keys_the_cache_by_its_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"x" * 10)
    options = {"n": 8, "model": str(tmp_path / "pipe")}
    before = toy_data_folder("pairs", options)
    weights.write_bytes(b"y" * 10)
    os.utime(weights, ns=(1, 1))  # the model retrained in place: same size, other mtime
    assert toy_data_folder("pairs", options) != before
    # the argument and the option name the same model: the same key
    assert toy_data_folder("pairs", {"n": 8}, str(tmp_path / "pipe")) == toy_data_folder(
        "pairs", options
    )
