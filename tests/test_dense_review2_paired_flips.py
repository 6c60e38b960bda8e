"""`sides: paired` with `diffusion.random_flip` (SD1.5: one coin per image): the winner's weight
map must lie on the other image in that image's own frame, i.e. mirrored when only one of the
two was flipped, or it covers the mirror image of the content the two share."""

from __future__ import annotations

import io

import pytest
import torch
from datasets import Dataset
from PIL import Image

from mmalign.config import from_dict
from mmalign.diffusion import dense as dense_mod
from mmalign.diffusion.data import PairImages, flip_coin
from mmalign.train.config import DenseConfig

R, LATENT, SEED = 32, 4, 0


class _RedIsFlawed:
    """Heatmap = the red channel: exactly mirror-equivariant, so any mismatch is the code's."""

    def dense(self, images, prompts):
        return {"artifact": torch.as_tensor(images)[:, :1].float()}


def _png(left_red: bool) -> bytes:
    array = torch.zeros(R, R, 3, dtype=torch.uint8)
    if left_red:
        array[:, : R // 4, 0] = 255  # a flaw on the left quarter only: not mirror-symmetric
    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="PNG")
    return buf.getvalue()


def _rows(n: int) -> Dataset:
    # the row's winner carries the flaw; rows 0 mod 3 are stored the other way round (label 0)
    swapped = [i % 3 == 0 for i in range(n)]
    return Dataset.from_dict({
        "prompt": ["a red circle"] * n,
        "chosen": [_png(not s) for s in swapped],
        "rejected": [_png(s) for s in swapped],
        "label": [0.0 if s else 1.0 for s in swapped],
    })  # fmt: skip


@pytest.mark.parametrize("flip_pairs", [False, True], ids=["per-image", "per-pair"])
def test_paired_weights_follow_each_images_flip(monkeypatch, flip_pairs):
    n = 12
    rows = _rows(n)
    images = PairImages(rows, R, flip_seed=SEED, flip_pairs=flip_pairs)
    monkeypatch.setattr("mmalign.rewards.get_scorer", lambda *a, **k: _RedIsFlawed())
    spec = from_dict(
        DenseConfig, {"scorer": "toy:flaws", "sides": "paired", "batch_size": 5}, "d.dense"
    )
    w = dense_mod.pair_weights(spec, images, LATENT).weights  # [N,2,1,h,w]
    # In the original (unflipped) frame both images get the winner's map: 0 on the flawed left
    # column of the latent grid, 1 elsewhere.
    expected = torch.ones(1, LATENT, LATENT)
    expected[..., 0] = 0.0
    mixed = mixed_swapped = 0
    for i in range(n):
        coins = [flip_coin(SEED, i, 0 if flip_pairs else side) for side in (0, 1)]
        mixed += coins[0] != coins[1]
        mixed_swapped += coins[0] != coins[1] and i % 3 == 0
        for side in (0, 1):
            own = w[i, side].flip(-1) if coins[side] else w[i, side]
            assert torch.equal(own, expected), (i, side, coins)
    if not flip_pairs:  # rows flipped differently, with the winner on either side, are tested
        assert mixed > mixed_swapped > 0


def test_without_flips_paired_is_the_winners_map_on_both(monkeypatch):
    images = PairImages(_rows(4), R)
    monkeypatch.setattr("mmalign.rewards.get_scorer", lambda *a, **k: _RedIsFlawed())
    spec = from_dict(DenseConfig, {"scorer": "toy:flaws", "sides": "paired"}, "d.dense")
    w = dense_mod.pair_weights(spec, images, LATENT).weights
    assert torch.equal(w[:, 0], w[:, 1])
    assert not dense_mod.mirrored_pair(images, 0)
