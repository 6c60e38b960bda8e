"""PPD training step (Dang et al. CVPR 2025): Diffusion-DPO on user-conditioned scores."""

from __future__ import annotations

import torch

from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline
from mmalign.diffusion.ppd_scores import ppd_pair_scores
from mmalign.losses.pairwise import dpo


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (4, 4, 16, 16)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g), g


def test_reference_is_the_base_unet_and_only_the_branch_learns() -> None:
    pipe = tiny_sd_pipeline()
    unet, sched = pipe.unet, pipe.scheduler
    chosen, rejected, g = _batch()
    text = torch.randn(4, 5, 32, generator=g)
    users = torch.randn(4, 12, generator=g)
    frozen = {n: p.detach().clone() for n, p in unet.named_parameters()}
    params = ppd.add_user_branch(unet, 12)
    before = {id(p): p.detach().clone() for p in params}
    first = ppd_pair_scores(
        unet, sched, chosen, rejected, text, users, generator=torch.manual_seed(0)
    )
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for step in range(30):
        s = ppd_pair_scores(
            unet, sched, chosen, rejected, text, users, generator=torch.manual_seed(step % 3)
        )
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
    # The reference (branch off) does not depend on the branch: same draws, same scores.
    last = ppd_pair_scores(
        unet, sched, chosen, rejected, text, users, generator=torch.manual_seed(0)
    )
    assert torch.equal(first.ref_chosen, last.ref_chosen)
    assert torch.equal(first.ref_rejected, last.ref_rejected)
    assert not torch.equal(first.chosen, last.chosen)
