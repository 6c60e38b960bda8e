"""PPD sampling guides exactly when the stock pipeline does: a base whose guidance is embedded or
distilled (a UNet with `time_cond_proj_dim`, an LCM pipeline) runs no classifier-free guidance
at any `guidance_scale`, so the user embedding must go in alone, not as [zeros; e] (which the
pipeline would then read as extra user tokens, half of them the zero user's)."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline
from mmalign.diffusion.ppd_users import UserPipeline

D = 8
PROMPTS = ["a red circle", "a blue cross"]


def with_branch(pipe):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in ppd.add_user_branch(pipe.unet, D):  # a branch that changes the images
            p.data.add_(torch.randn_like(p) * 0.3)
    return pipe


def plain():
    return tiny_sd_pipeline()


def distilled():
    """The tiny SD pipeline on a UNet with a guidance embedding (`time_cond_proj_dim`)."""
    from diffusers import UNet2DConditionModel

    pipe = tiny_sd_pipeline()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(pipe.unet.config, time_cond_proj_dim=8)
    pipe.register_modules(unet=unet)
    return pipe


def lcm():
    """An LCM pipeline (never guides) on the distilled UNet."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    sd = distilled()
    return LatentConsistencyModelPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
        scheduler=LCMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip


def stock_guides(pipe, guidance: float) -> bool:
    """The stock pipeline's own CFG decision, recorded during a call of the bare pipeline."""
    seen: list[bool] = []

    def record(p, i, t, kw):
        seen.append(bool(p.do_classifier_free_guidance))
        return kw

    pipe(PROMPTS[:1], num_inference_steps=1, guidance_scale=guidance, output_type="pt",
         callback_on_step_end=record)  # fmt: skip
    return seen[0]


def _stock(pipe, e: torch.Tensor, guides: bool, guidance: float) -> torch.Tensor:
    """The stock pipeline with one embedding laid out as diffusers documents it: [1, 1, D],
    or [zeros; e] ([2, 1, D]) when it guides; it repeats it for the batch itself."""
    one = e[None, None]
    embeds = [torch.cat([torch.zeros_like(one), one]) if guides else one]
    gens = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    out = pipe(PROMPTS, num_inference_steps=2, guidance_scale=guidance, generator=gens,
               output_type="pt", ip_adapter_image_embeds=embeds).images  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("make", "guidance", "guides"),
    [(plain, 3.0, True), (plain, 1.0, False), (distilled, 3.0, False), (lcm, 8.5, False)],
    ids=["sd-guided", "sd-unguided", "time-cond-unet", "lcm"],
)
def test_user_pipeline_guides_as_the_stock_pipeline(make, guidance, guides) -> None:
    pipe = make()
    assert stock_guides(pipe, guidance) is guides  # the fixture is what it says
    with_branch(pipe)
    e = torch.randn(D, generator=torch.Generator().manual_seed(1))
    want = _stock(pipe, e, guides, guidance)
    gens = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    got = UserPipeline(pipe, e)(PROMPTS, num_inference_steps=2, guidance_scale=guidance,
                                generator=gens, output_type="pt").images  # fmt: skip
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert ppd.pipeline_guides(pipe, guidance) is guides


def test_the_default_guidance_is_the_pipelines_own() -> None:
    # no guidance_scale: the pipeline's default (7.5 for SD, so it guides; the distilled UNet
    # never does), not a fixed 7.5 read for every class
    pipe = plain()
    assert ppd.pipeline_guides(pipe) is True
    assert not hasattr(pipe, "_guidance_scale")  # the probe leaves no state behind
    assert ppd.pipeline_guides(distilled()) is False
    assert ppd.pipeline_guides(lcm()) is False
