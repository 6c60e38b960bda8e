"""A flow model's pre-encoding cache written before 16-bit images were read at their bit depth
is not reused.

`encode.CACHE_VERSION` went to 2 when 16-bit and float greyscale images started to be read at
their bit depth (schema.grey_unit; they were clipped to white): the pixels, so the latents, of
such data changed. The flow cache's key (`flow_fingerprint`) carried only its own
FLOW_CACHE_VERSION, so an SD3 / FLUX run kept training on the white latents of its old cache.
"""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from flow_helpers import MAX_SEQUENCE, tiny_flow
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from mmalign.diffusion import encode
from mmalign.diffusion.data import PairImages
from mmalign.diffusion.encode import EncodedPairs, precompute
from mmalign.diffusion.flow_encode import FlowEncoder, flow_fingerprint

VERSION_BEFORE_16_BIT = 1  # encode.CACHE_VERSION when greyscale 16-bit images were clipped


def _grey16(value: int) -> Image.Image:
    return Image.fromarray(np.full((32, 32), value, dtype=np.uint16))  # mode I;16


def _shard(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "shard-00000.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_a_flow_cache_of_the_version_before_16_bit_reading_is_rebuilt(tmp_path, monkeypatch):
    rows = Dataset.from_dict(
        {"prompt": ["a grey square"], "chosen": [_grey16(30000)], "rejected": [_grey16(9000)]}
    )
    images = PairImages(rows, 32)
    model = tiny_flow("sd3")
    encoder = FlowEncoder(model, max_sequence_length=MAX_SEQUENCE)

    def key() -> str:
        return flow_fingerprint(model, 32, rows._fingerprint, len(rows), MAX_SEQUENCE)

    folder = tmp_path / "encoded"
    with monkeypatch.context() as patch:  # what a run of the old version wrote
        patch.setattr(encode, "CACHE_VERSION", VERSION_BEFORE_16_BIT)
        old_key = key()
        precompute(encoder, images, folder, old_key, progress=False)
    right = EncodedPairs(folder)[0]["latents"]  # today's pixels, encoded
    # the old build's latents were of the clipped (white) pixels: stand others in for them
    wrong = torch.full_like(right, 7.0)[None]
    save_file({**_shard(folder), "latents": wrong}, str(folder / "shard-00000.safetensors"))

    assert key() != old_key
    precompute(encoder, images, folder, key(), progress=False)
    torch.testing.assert_close(EncodedPairs(folder)[0]["latents"], right)  # rebuilt, not reused
