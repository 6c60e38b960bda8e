"""A VAE config's `latents_mean` / `latents_std` (Playground v2.5's SDXL VAE sets them).

diffusers' SDXL pipelines normalise with them: `(z - mean) * scaling_factor / std` when an
image is encoded (StableDiffusionXLImg2ImgPipeline.prepare_latents) and the inverse before the
VAE decodes (StableDiffusionXLPipeline.__call__). mmalign's encoder multiplied by the scaling
factor alone, so such a model trained on latents its sampler never sees. StableDiffusionPipeline
(SD1.5) ignores the two fields, and so does mmalign for that family.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion import DiffusionModel, tiny_sd_pipeline, tiny_sdxl_pipeline
from mmalign.diffusion.encode import Encoder

MEAN = [0.3, -0.2, 0.1, 0.5]
STD = [1.5, 0.8, 2.0, 0.6]
SEEDS = [3, 5, 7]


def _with_stats(pipe):
    pipe.vae.register_to_config(latents_mean=MEAN, latents_std=STD)
    return pipe


def _pixels() -> torch.Tensor:
    return torch.rand((3, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1


def _draws(vae, pixels: torch.Tensor) -> torch.Tensor:
    """The raw posterior draws z of `pixels`, one generator per image seeded by SEEDS."""
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.sample(generator=gens)


def test_sdxl_latents_are_normalised_with_the_vae_mean_and_std():
    model = DiffusionModel(_with_stats(tiny_sdxl_pipeline(seed=0)), "sdxl", "tiny-sdxl")
    vae, pixels = model.pipe.vae, _pixels()
    z = _draws(vae, pixels)
    mean, std = torch.tensor(MEAN).view(1, 4, 1, 1), torch.tensor(STD).view(1, 4, 1, 1)
    expected = (z - mean) * vae.config.scaling_factor / std
    got = Encoder(model, vae_batch_size=None).latents(pixels, SEEDS)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # the pipeline's own encoding path (img2img's prepare_latents) gives the same latents
    from diffusers import StableDiffusionXLImg2ImgPipeline

    img2img = StableDiffusionXLImg2ImgPipeline(**model.pipe.components)
    with torch.no_grad():
        theirs = img2img.prepare_latents(
            pixels, None, len(pixels), 1, torch.float32, torch.device("cpu"),
            generator=[torch.Generator().manual_seed(s) for s in SEEDS], add_noise=False,
        )  # fmt: skip
    torch.testing.assert_close(got, theirs, atol=1e-6, rtol=0)


def _pipeline_decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Pixels in [0,1] from the SDXL pipeline's own decode path: a call that starts from
    `latents` and whose scheduler step leaves them as they are."""
    pipe.watermark = None
    pipe.scheduler.step = lambda out, t, sample, *a, **k: (sample,)
    with torch.no_grad():
        return pipe(
            ["a"] * len(latents), latents=latents, num_inference_steps=1, guidance_scale=1.0,
            output_type="pt", height=32, width=32,
        ).images  # fmt: skip


def test_decoding_mmalign_latents_matches_the_pipeline_decode_path():
    from mmalign.diffusion.encode import decode_latents

    model = DiffusionModel(_with_stats(tiny_sdxl_pipeline(seed=0)), "sdxl", "tiny-sdxl")
    latents = Encoder(model).latents(_pixels(), SEEDS)
    ours = decode_latents(model, latents)
    theirs = _pipeline_decode(model.pipe, latents)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)
    # decode(encode(x)) decodes the raw draw z: the normalisation is undone exactly
    with torch.no_grad():
        raw = model.pipe.vae.decode(_draws(model.pipe.vae, _pixels())).sample
    torch.testing.assert_close(ours, (raw / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_without_the_fields_or_for_sd15_only_the_scaling_factor_applies(family):
    """No latents_mean/std: unchanged. SD1.5: StableDiffusionPipeline decodes with the scaling
    factor alone even when the VAE config has them, so its training latents do too."""
    make = tiny_sdxl_pipeline if family == "sdxl" else tiny_sd_pipeline
    pipes = [make(seed=0)] if family == "sdxl" else [make(seed=0), _with_stats(make(seed=0))]
    for pipe in pipes:
        model = DiffusionModel(pipe, family, "tiny")  # type: ignore[arg-type]
        pixels = _pixels()
        expected = _draws(pipe.vae, pixels) * pipe.vae.config.scaling_factor
        got = Encoder(model, vae_batch_size=None).latents(pixels, SEEDS)
        assert torch.equal(got, expected)
