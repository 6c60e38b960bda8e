"""PPD training step (Dang et al. CVPR 2025): Diffusion-DPO on user-conditioned scores, through
the scorer the recipe trains with (`PPDPairScorer`)."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion import ppd
from mmalign.diffusion.load import DiffusionModel, tiny_sd_pipeline, tiny_sdxl_pipeline
from mmalign.diffusion.ppd_recipe import PPDPairScorer
from mmalign.diffusion.scorer import DiffusionPairScorer
from mmalign.losses.pairwise import dpo


def _setup(family: str = "sd"):
    pipe = (tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline)()
    model = DiffusionModel(pipe, family, "tiny")

    @torch.no_grad()
    def encode(texts):
        out = pipe.encode_prompt(
            texts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"prompt_embeds": out[0], **({"pooled": out[2]} if family == "sdxl" else {})}

    g = torch.Generator().manual_seed(0)
    batch = {
        "latents": torch.randn(4, 2, 4, 16, 16, generator=g),
        **encode(["a red circle on a blue background"] * 4),
        "user_embeds": torch.randn(4, 12, generator=g),
    }
    if family == "sdxl":  # each image's (size, crop, target) micro-conditioning
        batch["time_ids"] = torch.tensor([[32, 32, 0, 0, 32, 32]] * 2).float().expand(4, 2, 6)
    empty = encode([""])
    scorer = PPDPairScorer(model, empty, reference="adapters", caption_dropout=0.0)
    plain = DiffusionPairScorer(model, empty, reference="none", caption_dropout=0.0)
    return pipe.unet, scorer, batch, plain


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_reference_is_the_base_unet_and_only_the_branch_learns(family) -> None:
    unet, scorer, batch, plain = _setup(family)
    seeds = torch.arange(4) + 100
    with torch.no_grad():
        base = plain(unet, batch, seeds, with_reference=False)["main"]  # before the branch
    frozen = {n: p.detach().clone() for n, p in unet.named_parameters()}
    params = ppd.add_user_branch(unet, 12)
    before = {id(p): p.detach().clone() for p in params}
    first = scorer(unet, batch, seeds, with_reference=True)["main"]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for step in range(30):
        s = scorer(unet, batch, seeds + step % 3, with_reference=True)["main"]
        out = dpo(s, beta=50.0)
        opt.zero_grad()
        out.loss.mean().backward()
        opt.step()
        losses.append(float(out.loss.mean()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05  # it learns the users' pairs
    assert any(not torch.equal(before[id(p)], p) for p in params)
    for n, p in unet.named_parameters():
        if n in frozen:
            assert torch.equal(frozen[n], p), n  # nothing outside the branch moved
    # The reference (branch off) does not depend on the branch: same draws, same scores...
    last = scorer(unet, batch, seeds, with_reference=True)["main"]
    assert torch.equal(first.ref_chosen, last.ref_chosen)
    assert torch.equal(first.ref_rejected, last.ref_rejected)
    assert not torch.equal(first.chosen, last.chosen)
    # ...and is the UNet before the branch was added, bit for bit
    assert torch.equal(first.ref_chosen, base.chosen)
    assert torch.equal(first.ref_rejected, base.rejected)


def test_dropped_users_condition_on_the_zero_embedding() -> None:
    unet, scorer, batch, _ = _setup()
    params = ppd.add_user_branch(unet, 12)
    with torch.no_grad():
        for p in params:  # a branch that is not zero, so users change the scores
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    seeds = torch.arange(4) + 100
    scorer.user_drop = 0.0
    kept = scorer(unet, batch, seeds, with_reference=False)["main"]
    scorer.user_drop = 1.0
    dropped = scorer(unet, batch, seeds, with_reference=False)["main"]
    zero = dict(batch, user_embeds=torch.zeros_like(batch["user_embeds"]))
    scorer.user_drop = 0.0
    as_zero = scorer(unet, zero, seeds, with_reference=False)["main"]
    assert torch.equal(dropped.chosen, as_zero.chosen)
    assert not torch.equal(kept.chosen, dropped.chosen)


def test_user_drop_rate_and_draws_per_pair() -> None:
    """Training's user drop (`PPDPairScorer.user_keep`): about `user_drop` of the pairs, each
    pair's draw from its own seed, so a pair drops alike in any batch."""
    _, scorer, _, _ = _setup()
    scorer.user_drop = 0.3
    seeds = torch.arange(4000)
    keep = scorer.user_keep(seeds)
    assert 0.27 < 1 - float(keep.mean()) < 0.33
    assert torch.equal(scorer.user_keep(seeds[100:120].flip(0)), keep[100:120].flip(0))
    scorer.user_drop = 0.0
    assert bool(scorer.user_keep(seeds[:50]).all())
