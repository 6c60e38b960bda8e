"""A bfloat16 SD3 transformer gets its timestep `sigma * T` in float32, as the SD3 pipeline
passes it at sampling: rounded to bfloat16, 0.9013 * 1000 became 904 (the noise is at 901.3)."""

from __future__ import annotations

import torch
from flow_helpers import tiny_flow

from mmalign.diffusion.flow import FlowPairScorer


def test_bf16_sd3_is_conditioned_on_the_exact_timestep():
    model = tiny_flow("sd3")
    net = model.transformer.to(torch.bfloat16)
    scorer = FlowPairScorer(model, {}, reference="none")
    sigma = torch.tensor([0.7534, 0.9013, 0.3127])
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, 4, 16, 16, generator=g)
    cond = {"prompt_embeds": torch.randn(3, 7, 64, generator=g), "pooled": torch.randn(3, 64)}
    seen: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs):
        seen["timestep"] = kwargs["timestep"]

    handle = net.register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        pred = scorer.predict(net, noisy, sigma, cond)
    handle.remove()
    torch.testing.assert_close(seen["timestep"].float(), sigma * 1000, rtol=0, atol=1e-3)
    # and the velocity is the one the stock pipeline's call (float32 timestep) gets
    with torch.no_grad():
        stock = net(
            hidden_states=noisy.to(torch.bfloat16),
            encoder_hidden_states=cond["prompt_embeds"].to(torch.bfloat16),
            pooled_projections=cond["pooled"].to(torch.bfloat16),
            timestep=sigma * 1000,
        ).sample
    assert torch.equal(pred, stock)
