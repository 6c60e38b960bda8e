"""A pre-encoding cache written before 16-bit images were read at their bit depth is not reused.

Reading 16-bit and float greyscale training images at their bit depth (schema.grey_unit; they
were clipped to white) changed the latents of such data, and normalising SDXL latents by the
VAE's latents_mean / latents_std changed those of such a VAE; neither is in the cache's key
(the same rows, encoders and resolution), so CACHE_VERSION had to change with them.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from mmalign.diffusion import encode
from mmalign.diffusion.data import PairImages
from mmalign.diffusion.encode import EncodedPairs, Encoder, fingerprint, precompute
from mmalign.diffusion.load import DiffusionModel, tiny_sd_pipeline

VERSION_BEFORE_16_BIT = 1  # CACHE_VERSION when greyscale 16-bit images were clipped


def _grey16(value: int) -> Image.Image:
    return Image.fromarray(np.full((32, 32), value, dtype=np.uint16))  # mode I;16


def test_a_cache_of_the_version_before_16_bit_reading_is_rebuilt(tmp_path, monkeypatch):
    rows = Dataset.from_dict(
        {"prompt": ["a grey square"], "chosen": [_grey16(30000)], "rejected": [_grey16(9000)]}
    )
    images = PairImages(rows, 32)
    model = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny")
    folder = tmp_path / "encoded"
    with monkeypatch.context() as patch:  # what a run of the old version wrote
        patch.setattr(encode, "CACHE_VERSION", VERSION_BEFORE_16_BIT)
        old_key = fingerprint(model, 32, rows._fingerprint, len(rows))
        precompute(Encoder(model), images, folder, old_key, progress=False)
    right = EncodedPairs(folder)[0]["latents"]  # today's pixels, encoded
    # the old build's latents were of the clipped (white) pixels: stand others in for them
    wrong = torch.full_like(right, 7.0)[None]
    save_file({**_shard(folder), "latents": wrong}, str(folder / "shard-00000.safetensors"))

    key = fingerprint(model, 32, rows._fingerprint, len(rows))
    assert key != old_key
    precompute(Encoder(model), images, folder, key, progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"] == encode.CACHE_VERSION > VERSION_BEFORE_16_BIT
    assert meta["key"] == key
    torch.testing.assert_close(EncodedPairs(folder)[0]["latents"], right)  # rebuilt, not reused


def _shard(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "shard-00000.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}
