"""The lowest training sigma is the bottom of the shifted table, as in diffusers' SD3 script.

diffusers' `train_dreambooth_lora_sd3.py` reads sigma from the scheduler's shift-3 table, whose
lowest level is 3 * 0.001 / (1 + 2 * 0.001) = 0.002994 (t = 2.994). The scorer clamped at the
unshifted 1 / T = 0.001 instead, a level three times lower that SD3 never trains on, with a
`sigma_sqrt` weight of 1e6 against the table's 1.1e5.
"""

from __future__ import annotations

import torch
from flow_helpers import tiny_flow

from mmalign.diffusion.flow import FlowPairScorer, FlowSettings


def test_sd3_sigmas_stay_on_the_shifted_tables_range():
    model = tiny_flow("sd3")
    table = model.pipe.scheduler.sigmas  # the shift-3 training table diffusers samples from
    # logit-normal centred at -12: every u is below 1e-5, so every sigma is at the floor
    settings = FlowSettings(logit_mean=-12.0, weighting="sigma_sqrt")
    scorer = FlowPairScorer(model, {}, reference="none", settings=settings)
    sigma = scorer.draws(torch.arange(8), torch.Size([1, 2, 2]))[0]
    torch.testing.assert_close(sigma, torch.full_like(sigma, float(table.min())))
    assert float(table.min()) > 0.0029  # the shifted floor, not 1 / T
    # the top of the range is the table's too (sigma 1 at u -> 1, never above)
    top = FlowPairScorer(model, {}, reference="none", settings=FlowSettings(logit_mean=12.0))
    high = top.draws(torch.arange(8), torch.Size([1]))[0]
    assert high.max() <= 1.0 and high.min() > 0.9999


def test_an_explicit_shift_sets_the_floor_it_maps_1_over_t_to():
    model = tiny_flow("flux", guidance_embeds=False)  # FLUX: shift 1 at training
    low = FlowSettings(logit_mean=-12.0)
    flux = FlowPairScorer(model, {}, reference="none", settings=low)
    torch.testing.assert_close(flux.draws(torch.arange(4), torch.Size([1]))[0],
                               torch.full((4,), 1e-3))  # fmt: skip
    shifted = FlowPairScorer(model, {}, reference="none", settings=FlowSettings(
        logit_mean=-12.0, shift=2.0))  # fmt: skip
    torch.testing.assert_close(shifted.draws(torch.arange(4), torch.Size([1]))[0],
                               torch.full((4,), 2e-3 / 1.001))  # fmt: skip
