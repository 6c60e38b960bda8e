"""Sampling a half-precision model: `load_pipeline(dtype="float16" / "bfloat16")` (and
`load_tuned(..., dtype=...)`, `load_flow_pipeline`) keeps the VAE in float32 on purpose (the
SDXL VAE overflows in fp16), but the pipelines hand `vae.decode` the denoiser's half-precision
latents, so `generate` / `generate_seeded` (what `mmalign sample`, `eval winrate` and the
labeling app call) failed at the first decode: "Input type (c10::BFloat16) and bias type
(float) should be the same". On a GPU that is how one samples SDXL or FLUX in half precision.
They now decode as validation does (`vae_in_own_precision`): the latents cast to the VAE's
dtype, outside any autocast. A float32 pipeline samples exactly as before.

Shown on the CPU in bfloat16 (the same dtype rule as CUDA's fp16 / bf16).
"""

from __future__ import annotations

import torch

from mmalign.diffusion import tiny_sd_pipeline, tiny_sdxl_pipeline
from mmalign.diffusion.flow_tiny import tiny_sd3_pipeline
from mmalign.diffusion.sample import generate, vae_in_own_precision


def _half(pipe, dtype=torch.bfloat16):
    for name in ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(dtype)
    assert next(pipe.vae.parameters()).dtype == torch.float32  # as load_pipeline keeps it
    return pipe


def _sample(pipe):
    return generate(pipe, ["a red circle", "a blue square"], seed=3, steps=2, guidance=2.0,
                    batch_size=2, desc="test")  # fmt: skip


def test_half_precision_sd_and_sdxl_pipelines_sample():
    for make in (tiny_sd_pipeline, tiny_sdxl_pipeline):
        images = _sample(_half(make(0)))
        assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
        assert torch.isfinite(images).all() and 0 <= images.min() and images.max() <= 1


def test_half_precision_flow_pipeline_samples():
    images = _sample(_half(tiny_sd3_pipeline(0, t5=False)))
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_a_float32_pipeline_samples_as_before():
    pipe = tiny_sd_pipeline(0)
    again = tiny_sd_pipeline(0)
    wrapped = _sample(pipe)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    plain = again(["a red circle", "a blue square"], num_inference_steps=2, guidance_scale=2.0,
                  generator=gens, output_type="pt").images  # fmt: skip
    assert torch.equal(wrapped, plain.float())
    assert "decode" not in pipe.vae.__dict__  # the VAE is its class's own again


def test_the_wrapper_nests():
    vae = tiny_sd_pipeline(0).vae
    with vae_in_own_precision(vae):
        inner = vae.decode
        with vae_in_own_precision(vae):
            assert vae.decode is inner
        assert vae.decode is inner
    assert "decode" not in vae.__dict__
