"""Dense preference weighting (mmalign/diffusion/dense.py): pooling, weights, scores."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.dense import DenseWeights, dense_weights, pool_to_latent, weighted_mse
from mmalign.rewards import get_scorer
from mmalign.toy.flaws import inject_flaws
from mmalign.toy.render import render_batch
from mmalign.toy.world import sample_prompts


def test_pooling_equals_a_direct_block_mean():
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(2, 2, 32, 32, generator=g)
    pooled = pool_to_latent(heat, (4, 4))
    assert pooled.shape == (2, 2, 4, 4)
    for b in range(2):
        for k in range(2):
            for i in range(4):
                for j in range(4):
                    block = heat[b, k, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8]
                    assert float(pooled[b, k, i, j]) == pytest.approx(float(block.mean()), 1e-6)
    with pytest.raises(ValueError, match="do not tile"):
        pool_to_latent(heat, (5, 5))


def test_all_ones_weight_gives_exactly_the_plain_score():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    plain = (pred - target).pow(2).mean(dim=(1, 2, 3))
    assert torch.equal(weighted_mse(pred, target, torch.ones(3, 1, 8, 8)), plain)
    assert torch.equal(weighted_mse(pred, target, None), plain)
    assert torch.equal(dense_weights(torch.zeros(3, 1, 64, 64), (8, 8)), torch.ones(3, 1, 8, 8))


def test_flawed_cells_do_not_count():
    pred, target = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    pred[0, :, 0, 0] = 2.0  # error 4 per channel in cell (0, 0) only
    heat = torch.zeros(1, 1, 16, 16)
    heat[0, 0, :8, :8] = 1.0  # that cell is fully flawed
    w = dense_weights(heat, (2, 2))
    assert w[0, 0].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert float(weighted_mse(pred, target, w)) == 0.0
    assert float(weighted_mse(pred, target)) == pytest.approx(4 * 4 / 16)


def _flawed_scene(n: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """n training prompts, their clean renders and the same renders with flaws injected."""
    prompts = [p.text for p in sample_prompts(n, "train", 0)]
    clean = render_batch(sample_prompts(n, "train", 0))
    return prompts, clean, inject_flaws(clean, 0)[0]


def test_dense_weights_from_toy_flaws_once_per_image():
    prompts, clean, flawed = _flawed_scene(6)
    scorer = get_scorer("toy:flaws")
    # chosen = flawed here, to see its flaws weighted down
    dw = DenseWeights.compute(scorer, flawed, clean, prompts, (4, 4), batch_size=4)
    assert dw.weights.shape == (6, 2, 1, 4, 4) and len(dw) == 6
    assert torch.equal(dw.weights[:, 1], torch.ones(6, 1, 4, 4))  # rejected left at 1
    heat = scorer.dense(flawed, prompts)["artifact"]
    torch.testing.assert_close(dw.weights[:, 0], 1 - pool_to_latent(heat, (4, 4)))
    assert float(dw.weights[:, 0].min()) < 1  # the flaws show
    torch.testing.assert_close(dw.rows([5, 0]), dw.weights[[5, 0]])


def test_scorer_with_all_ones_dense_weight_gives_todays_scores():
    """The hook in DiffusionPairScorer: batch["dense_weight"] of ones changes nothing; a
    weight that zeroes the chosen side's cells zeroes its MSE (policy and reference alike)."""
    from mmalign.diffusion import DiffusionModel, DiffusionPairScorer, tiny_sd_pipeline

    model = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny")
    pipe, b = model.pipe, 3
    embeds = pipe.encode_prompt(["a red circle"] * b, device="cpu", num_images_per_prompt=1,
                                do_classifier_free_guidance=False)[0]  # fmt: skip
    empty = pipe.encode_prompt([""], device="cpu", num_images_per_prompt=1,
                               do_classifier_free_guidance=False)[0]  # fmt: skip
    scorer = DiffusionPairScorer(model, {"prompt_embeds": empty}, reference="copy",
                                 caption_dropout=0.0)  # fmt: skip
    latents = torch.randn(b, 2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    batch = {"latents": latents, "prompt_embeds": embeds}
    seeds = torch.arange(b) + 7
    with torch.no_grad():
        plain = scorer(pipe.unet, batch, seeds, with_reference=True)["main"]
        ones = {**batch, "dense_weight": torch.ones(b, 2, 1, 16, 16)}
        same = scorer(pipe.unet, ones, seeds, with_reference=True)["main"]
        zero = torch.ones(b, 2, 1, 16, 16)
        zero[:, 0] = 0
        masked = scorer(pipe.unet, {**batch, "dense_weight": zero}, seeds,
                        with_reference=True)["main"]  # fmt: skip
    for field in ("chosen", "rejected", "ref_chosen", "ref_rejected"):
        assert torch.equal(getattr(plain, field), getattr(same, field))
    assert torch.equal(masked.chosen, torch.zeros(b)) and torch.equal(
        masked.ref_chosen, torch.zeros(b)
    )
    assert torch.equal(masked.rejected, plain.rejected)


def test_max_timestep_weights_only_the_pairs_drawn_below_it():
    """diffusion.dense.max_timestep: a pair drawn at t >= it keeps the plain error exactly; one
    below it is weighted."""
    from mmalign.diffusion import DiffusionModel, DiffusionPairScorer, tiny_sd_pipeline

    model = DiffusionModel(tiny_sd_pipeline(seed=0), "sd", "tiny")
    pipe, b = model.pipe, 16
    embeds = pipe.encode_prompt(["a red circle"] * b, device="cpu", num_images_per_prompt=1,
                                do_classifier_free_guidance=False)[0]  # fmt: skip
    empty = {"prompt_embeds": embeds[:1]}
    latents = torch.randn(b, 2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    batch = {"latents": latents, "prompt_embeds": embeds}
    zero = torch.ones(b, 2, 1, 16, 16)
    zero[:, 0] = 0  # the chosen side's error vanishes wherever the weights apply
    seeds = torch.arange(b) + 7
    gated = DiffusionPairScorer(model, empty, reference="none", caption_dropout=0.0,
                                dense_max_timestep=500)  # fmt: skip
    t = gated.draws(seeds, torch.Size([4, 16, 16]))[0]
    low = t < 500
    assert bool(low.any()) and not bool(low.all())
    plain_scorer = DiffusionPairScorer(model, empty, reference="none", caption_dropout=0.0)
    with torch.no_grad():
        plain = plain_scorer(pipe.unet, batch, seeds, with_reference=False)["main"]
        out = gated(pipe.unet, {**batch, "dense_weight": zero}, seeds, with_reference=False)
    out = out["main"]
    assert torch.equal(out.chosen[~low], plain.chosen[~low])
    assert torch.equal(out.chosen[low], torch.zeros(int(low.sum())))
    assert torch.equal(out.rejected, plain.rejected)


def test_max_timestep_must_be_positive():
    from mmalign.config import ConfigError, from_dict
    from mmalign.train.config import DenseConfig

    with pytest.raises(ConfigError, match="max_timestep"):
        from_dict(DenseConfig, {"scorer": "toy:flaws", "max_timestep": 0}, "diffusion.dense")


def test_normalized_weights_keep_each_image_total_and_the_ratios():
    g = torch.Generator().manual_seed(1)
    heat = torch.rand(3, 1, 32, 32, generator=g)
    heat[1] = 0.0  # a clean image: weights all 1 either way
    heat[2] = 1.0  # flawed everywhere: weights all 0 either way
    plain, norm = dense_weights(heat, (4, 4)), dense_weights(heat, (4, 4), normalize=True)
    torch.testing.assert_close(norm[0].mean(), torch.tensor(1.0))
    torch.testing.assert_close(norm[0] / norm[0, 0, 0, 0], plain[0] / plain[0, 0, 0, 0])
    assert torch.equal(norm[1], torch.ones_like(norm[1]))
    assert torch.equal(norm[2], torch.zeros_like(norm[2]))
    assert float(plain[0].mean()) < 1.0 and float(norm[0].max()) > 1.0


def test_paired_sides_give_the_rejected_the_chosen_weights():
    prompts, clean, flawed = _flawed_scene(4)
    scorer = get_scorer("toy:flaws")
    chosen_only = DenseWeights.compute(scorer, flawed, clean, prompts, (4, 4), batch_size=4)
    paired = DenseWeights.compute(scorer, flawed, clean, prompts, (4, 4), sides="paired")
    torch.testing.assert_close(paired.weights[:, 0], chosen_only.weights[:, 0])
    # the rejected (clean) image takes the chosen's map, not its own all-ones one
    torch.testing.assert_close(paired.weights[:, 1], paired.weights[:, 0])
    assert float(paired.weights[:, 1].min()) < 1


class _Pairs:
    """A PairImages stand-in: rows of pixels [2,3,R,R] in [-1, 1] and a prompt; counts reads."""

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor, prompts: list[str]):
        self.pixels = torch.stack([chosen, rejected], 1).mul(2).sub(1)
        self.prompts, self.reads = prompts, 0

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        return {"pixels": self.pixels[i], "prompt": self.prompts[i]}


def test_pair_weights_batched_and_cached(tmp_path, monkeypatch):
    """`diffusion.dense` weights: the same as computing them at once, one batch of images read
    at a time, written to the cache folder and read back without the scorer on a rerun."""
    from mmalign.config import ConfigError, from_dict
    from mmalign.diffusion import dense as dense_mod
    from mmalign.train.config import DenseConfig

    prompts, clean, flawed = _flawed_scene(5)
    spec = from_dict(DenseConfig, {"scorer": "toy:flaws", "batch_size": 2}, "diffusion.dense")
    whole = DenseWeights.compute(get_scorer("toy:flaws"), flawed, clean, prompts, (4, 4))
    pairs = _Pairs(flawed, clean, prompts)
    first = dense_mod.pair_weights(spec, pairs, 4, cache_dir=tmp_path)
    torch.testing.assert_close(first.weights, whole.weights, atol=1e-6, rtol=0)
    assert pairs.reads == 5 and len(list(tmp_path.glob("dense-weights-*.safetensors"))) == 1

    def no_scorer(*args, **kwargs):
        raise AssertionError("the cached weights should have been read")

    monkeypatch.setattr("mmalign.rewards.get_scorer", no_scorer)
    again = dense_mod.pair_weights(spec, _Pairs(flawed, clean, prompts), 4, cache_dir=tmp_path)
    assert torch.equal(again.weights, first.weights)
    # another map is another cache entry: computed, so it needs the scorer
    other = from_dict(DenseConfig, {"scorer": "toy:flaws", "sides": "paired"}, "diffusion.dense")
    with pytest.raises(AssertionError, match="cached"):
        dense_mod.pair_weights(other, pairs, 4, cache_dir=tmp_path)
    # typos fail when the recipe loads, named with a did-you-mean
    with pytest.raises(ConfigError, match=r"did you mean 'diffusion\.dense\.sides'"):
        from_dict(DenseConfig, {"scorer": "toy:flaws", "side": "paired"}, "diffusion.dense")
    with pytest.raises(ConfigError, match="did you mean 'paired'"):
        from_dict(DenseConfig, {"scorer": "toy:flaws", "sides": "pared"}, "diffusion.dense")
    with pytest.raises(ConfigError, match="gives no heatmaps"):
        from_dict(DenseConfig, {"scorer": "pickscore"}, "diffusion.dense")
    with pytest.raises(ConfigError, match=r"missing required key 'diffusion\.dense\.scorer'"):
        from_dict(DenseConfig, {"map": "artifact"}, "diffusion.dense")
