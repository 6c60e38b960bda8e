"""The pre-encoding cache's key sees a change anywhere in the encoders' weights.

It summed only the first and last parameter tensors of each encoder: a text encoder with a
LoRA merged into its attention (or a VAE with its encoder fine-tuned) kept the base model's
key, and `precompute` handed the other model the base model's embeddings and latents.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from PIL import Image

from mmalign.diffusion.data import PairImages
from mmalign.diffusion.encode import EncodedPairs, Encoder, fingerprint, precompute
from mmalign.diffusion.flow_encode import flow_fingerprint
from mmalign.diffusion.flow_load import FlowModel
from mmalign.diffusion.flow_tiny import tiny_sd3_pipeline
from mmalign.diffusion.load import DiffusionModel, tiny_sd_pipeline


def _middle_changed(model: torch.nn.Module) -> None:
    """Scale one tensor that is neither the module's first nor its last parameter."""
    params = list(model.parameters())
    with torch.no_grad():
        params[len(params) // 2].mul_(3.0)


def test_a_changed_middle_weight_builds_a_new_cache(tmp_path):
    rows = Dataset.from_dict(
        {
            "prompt": ["a red circle", "a blue square"],
            "chosen": [Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")],
            "rejected": [Image.new("RGB", (32, 32), "green"), Image.new("RGB", (32, 32), "gray")],
        }
    )
    images = PairImages(rows, 32)
    base = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "base")
    key = fingerprint(base, 32, rows._fingerprint, len(rows))
    folder = tmp_path / "cache"
    precompute(Encoder(base), images, folder, key, progress=False)

    for part in ("text_encoder", "vae"):
        other = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "other")
        _middle_changed(getattr(other.pipe, part))
        other_key = fingerprint(other, 32, rows._fingerprint, len(rows))
        assert other_key != key, part
        # with its own key the cache is rebuilt from the other model's encoders
        precompute(Encoder(other), images, folder, other_key, progress=False)
        cached = EncodedPairs(folder)[0]
        fresh = Encoder(other).encode(
            {"prompt": [rows[0]["prompt"]], **{k: v[None] for k, v in images[0].items()
                                                if k != "prompt"}},
            [0],
        )  # fmt: skip
        for name in ("prompt_embeds", "latents"):
            torch.testing.assert_close(cached[name], fresh[name][0], atol=1e-6, rtol=0)
        precompute(Encoder(base), images, folder, key, progress=False)  # back to the base


def test_the_flow_cache_key_sees_a_changed_middle_weight():
    base = FlowModel(tiny_sd3_pipeline(seed=0), "sd3", "base")
    key = flow_fingerprint(base, 32, "data", 4, 77)
    other = FlowModel(tiny_sd3_pipeline(seed=0), "sd3", "other")
    _middle_changed(other.pipe.text_encoder_3)
    assert flow_fingerprint(other, 32, "data", 4, 77) != key
