"""`dense:<path>.score` of images of several sizes: each image's score must not depend on the
sizes beside it in the call (review: a mixed batch was squashed to one square before the CLIP
backbone's own preprocessing, which centre-crops a non-square image scored alone)."""

from __future__ import annotations

import torch
from PIL import Image
from test_dense_reward import save_tiny_clip

from mmalign.rewards import get_scorer
from mmalign.rewards.dense import DenseRewardModel


def _tiny_clip_head(tmp_path):
    save_tiny_clip(tmp_path / "clip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "clip"), dim=32, heads=2, depth=1)
    return model.save_pretrained(tmp_path / "head")


def test_clip_head_scores_mixed_sizes_as_one_at_a_time(tmp_path):
    scorer = get_scorer(f"dense:{_tiny_clip_head(tmp_path)}", device="cpu", batch_size=4)
    g = torch.Generator().manual_seed(3)
    sizes = [(48, 64), (32, 32), (64, 48), (32, 32)]  # (height, width): two non-square
    pil = [Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).byte().numpy())
           for h, w in sizes]  # fmt: skip
    prompts = ["a red circle", "a green square", "a blue star", "a yellow moon"]
    one = torch.cat([scorer.score([im], [p]) for im, p in zip(pil, prompts, strict=True)])
    mixed = scorer.score(pil, prompts)
    # before the fix the non-square images differed by about 0.016 (a random head)
    torch.testing.assert_close(mixed, one, atol=1e-5, rtol=0)
    assert mixed.shape == (4,)
