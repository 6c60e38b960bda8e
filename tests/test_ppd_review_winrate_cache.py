"""PPD's per-user win rate reuses saved images only for the same models: a base model
retrained in place (same folder, other weights) draws its images again, as `run_winrate` does."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline
from mmalign.eval.ppd_winrate import run_user_winrate

PROMPTS = ["a white cross on a yellow background", "a red cross on a yellow background"]


def _base_pixels(folder):
    return [np.array(Image.open(f)) for f in sorted((folder / "images" / "base").glob("*.png"))]


def test_a_base_retrained_in_place_is_drawn_again(tmp_path):
    weights = tmp_path / "base-model" / "unet.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"first")
    tuned = tiny_sd_pipeline(seed=0)
    ppd.add_user_branch(tuned.unet, 8)
    embs = {"h00": torch.randn(8, generator=torch.Generator().manual_seed(0))}
    kw = dict(steps=2, guidance=2.5, batch_size=2, matrix=False,
              meta={"base": str(weights.parent), "tuned": None})  # fmt: skip
    run_user_winrate(tiny_sd_pipeline(seed=0), tuned, PROMPTS, embs, tmp_path / "eval", **kw)
    weights.write_bytes(b"retrained")  # the base folder now holds other weights
    run_user_winrate(tiny_sd_pipeline(seed=5), tuned, PROMPTS, embs, tmp_path / "eval", **kw)
    run_user_winrate(tiny_sd_pipeline(seed=5), tuned, PROMPTS, embs, tmp_path / "fresh", **kw)
    again, fresh = _base_pixels(tmp_path / "eval"), _base_pixels(tmp_path / "fresh")
    assert len(again) == len(fresh) == 2
    assert all(np.array_equal(a, f) for a, f in zip(again, fresh, strict=True))
