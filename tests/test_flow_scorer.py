"""The flow-matching pair scorer against a direct computation, for tiny SD3 and FLUX."""

from __future__ import annotations

import math

import pytest
import torch
from flow_helpers import empty_text, encoded_batch, tiny_flow

from mmalign.diffusion.flow import FlowPairScorer, FlowSettings
from mmalign.losses import Objective

B = 3
SEEDS = torch.arange(B) + 100


def _scorer(model, **kw) -> FlowPairScorer:
    kw.setdefault("reference", "none")
    kw.setdefault("caption_dropout", 0.0)
    if model.guidance_embeds:
        kw.setdefault("settings", FlowSettings(guidance=3.5))
    return FlowPairScorer(model, empty_text(model), **kw)


def _by_hand(model, batch, settings: FlowSettings, shift: float) -> tuple[torch.Tensor, ...]:
    """Noise, sigma, x_t, v = eps - x0 and the MSE written out here, one image at a time
    through the transformer, with diffusers' own FLUX packing and ids."""
    from diffusers import FluxPipeline

    net = model.transformer
    out = []
    for which in (0, 1):
        errors = []
        for i, seed in enumerate(SEEDS.tolist()):
            gen = torch.Generator().manual_seed(seed)
            if settings.sampling == "logit_normal":
                u = torch.sigmoid(torch.randn(1, generator=gen) * settings.logit_std
                                  + settings.logit_mean)  # fmt: skip
            else:
                u = torch.rand(1, generator=gen)
            sigma = (shift * u / (1 + (shift - 1) * u)).clamp(1e-3, 1.0)
            eps = torch.randn(4, 16, 16, generator=gen)[None]
            x0 = batch["latents"][i : i + 1, which]
            x_t = (1 - sigma) * x0 + sigma * eps
            v = eps - x0
            embeds = batch["prompt_embeds"][i : i + 1].float()
            pooled = batch["pooled"][i : i + 1].float()
            if model.family == "sd3":
                pred = net(hidden_states=x_t, encoder_hidden_states=embeds,
                           pooled_projections=pooled, timestep=sigma * 1000).sample  # fmt: skip
                err = (pred - v).pow(2).mean()
            else:
                packed = FluxPipeline._pack_latents(x_t, 1, 4, 16, 16)
                ids = FluxPipeline._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
                pred = net(hidden_states=packed, encoder_hidden_states=embeds,
                           pooled_projections=pooled, timestep=sigma,
                           img_ids=ids, txt_ids=torch.zeros(embeds.shape[1], 3),
                           guidance=torch.tensor([3.5])).sample  # fmt: skip
                err = (pred - FluxPipeline._pack_latents(v, 1, 4, 16, 16)).pow(2).mean()
            if settings.weighting == "cosmap":
                err = err * 2 / (math.pi * (1 - 2 * sigma + 2 * sigma**2))
            errors.append(err.reshape(()))
        out.append(torch.stack(errors))
    return out[0], out[1]


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize(
    "settings",
    [FlowSettings(), FlowSettings(sampling="uniform", weighting="cosmap")],
    ids=["logit_normal", "uniform-cosmap"],
)
@torch.no_grad()
def test_errors_equal_a_direct_computation(family, settings):
    model = tiny_flow(family)
    if model.guidance_embeds:
        settings = FlowSettings(**{**settings.__dict__, "guidance": 3.5})
    scorer = _scorer(model, settings=settings)
    batch = encoded_batch(model, B)
    scores = scorer(model.transformer, batch, SEEDS, with_reference=False)["main"]
    shift = 3.0 if family == "sd3" else 1.0  # SD3's table is shifted; FLUX shifts per size
    assert scorer.shift == shift
    chosen, rejected = _by_hand(model, batch, settings, shift)
    torch.testing.assert_close(-scores.chosen, chosen, atol=1e-6, rtol=0)
    torch.testing.assert_close(-scores.rejected, rejected, atol=1e-6, rtol=0)
    assert not torch.allclose(chosen, rejected)  # different images: the test can fail


@pytest.mark.parametrize("family", ["sd3", "flux"])
@torch.no_grad()
def test_chosen_and_rejected_share_noise_and_sigma(family):
    from mmalign.diffusion.flow import pack

    model = tiny_flow(family)
    scorer = _scorer(model)
    batch = encoded_batch(model, B)
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    handle = model.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    scorer(model.transformer, batch, SEEDS, with_reference=False)
    handle.remove()
    t = seen["timestep"]
    torch.testing.assert_close(t[:B], t[B:], atol=0, rtol=0)  # one sigma per pair
    sigma = (t / 1000 if family == "sd3" else t)[:B].view(-1, 1, 1, 1)
    x0c, x0r = batch["latents"][:, 0], batch["latents"][:, 1]
    if family == "flux":
        x0c, x0r, sigma = pack(x0c), pack(x0r), sigma.view(-1, 1, 1)
    noisy = seen["hidden_states"]
    eps_c = (noisy[:B] - (1 - sigma) * x0c) / sigma
    eps_r = (noisy[B:] - (1 - sigma) * x0r) / sigma
    torch.testing.assert_close(eps_c, eps_r, atol=1e-4, rtol=1e-4)  # one noise per pair
    # identical images then score identically
    same = encoded_batch(model, B, same=True)
    s = scorer(model.transformer, same, SEEDS, with_reference=False)["main"]
    # equal up to float rounding: with two threads the tiny FLUX's kernels round the rows of
    # the stacked [chosen; rejected] batch differently (2.4e-7 seen; a different noise or
    # sigma would differ by orders of magnitude more)
    torch.testing.assert_close(s.chosen, s.rejected, atol=1e-6, rtol=1e-6)


def test_sigma_sampling_distributions():
    model = tiny_flow("sd3")
    seeds = torch.arange(4000)
    shape = torch.Size([1, 2, 2])
    draws = {}
    for sampling in ("logit_normal", "uniform", "mode"):
        scorer = _scorer(model, settings=FlowSettings(sampling=sampling, shift=1.0))
        draws[sampling] = scorer.draws(seeds, shape)[0]
    assert abs(draws["uniform"].mean() - 0.5) < 0.02
    # logit-normal(0, 1) piles up in the middle: fewer draws in the outer fifths than uniform
    outer = lambda s: ((s < 0.2) | (s > 0.8)).float().mean()  # noqa: E731
    assert outer(draws["logit_normal"]) < 0.75 * outer(draws["uniform"])
    assert draws["mode"].min() >= 1e-3 and draws["mode"].max() <= 1.0
    shifted = _scorer(model).draws(seeds, shape)[0]  # SD3's shift 3 moves sigma up
    assert shifted.mean() > draws["logit_normal"].mean() + 0.1


@pytest.mark.filterwarnings("ignore:loss .* ignores soft labels")
def test_every_core_loss_applies():
    model = tiny_flow("sd3")
    batch = encoded_batch(model, B)
    from mmalign.diffusion.flow_lora import add_flow_lora
    from mmalign.train import LoraConfig

    add_flow_lora(model.transformer, "sd3", LoraConfig(rank=4))
    batch["label"] = torch.tensor([0.7, 0.9, 0.6])  # soft labels (SmPO, cDPO)
    scorer = _scorer(model, reference="adapters", use_labels=True)
    for spec in ({"loss": "dpo", "beta": 50.0}, {"loss": "mapo"}, {"loss": "kto", "beta": 50.0},
                 {"loss": "diffusion_kto", "beta": 50.0}, {"loss": "smpo", "beta": 50.0},
                 {"loss": "robust", "beta": 50.0, "eps": 0.1}):  # fmt: skip
        objective = Objective.from_config([spec])
        scores = scorer(model.transformer, batch, SEEDS, with_reference=objective.needs_reference)
        out = objective(scores)
        assert torch.isfinite(out.loss)
        out.loss.backward()
    grads = [p.grad for n, p in model.transformer.named_parameters() if "lora_" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_flux_dev_without_guidance_is_an_error():
    model = tiny_flow("flux")
    with pytest.raises(ValueError, match=r"diffusion.guidance.*guidance_embeds"):
        FlowPairScorer(model, empty_text(model), reference="none")
    schnell = tiny_flow("flux", guidance_embeds=False)  # no guidance embedding: none needed
    FlowPairScorer(schnell, empty_text(schnell), reference="none")
