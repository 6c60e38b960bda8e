"""Image-conditioned FLUX / SD3 variants are refused by name, not with a shape error mid-step.

FLUX.1-Canny-dev / Depth-dev (FluxControlPipeline) and FLUX.1-Fill-dev (FluxFillPipeline) carry
a FluxTransformer2DModel and a flow-matching scheduler, so `flow_family` took them for FLUX.1
text-to-image; their transformer reads the packed latents concatenated with the control image's
(or the mask's) channels, and the first training step died in the input projection with
"mat1 and mat2 shapes cannot be multiplied", after the load and any pre-encoding.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion.flow_load import flow_family
from mmalign.diffusion.flow_tiny import tiny_flux_pipeline, tiny_sd3_pipeline


def _tiny_flux_control():
    """The tiny FLUX pipeline as FLUX.1-Canny-dev is built: FluxControlPipeline, and a
    transformer taking the packed latents and the control image's (2 x 16 channels here)."""
    from diffusers import FluxControlPipeline, FluxTransformer2DModel

    base = tiny_flux_pipeline(seed=0, guidance_embeds=True)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=32, out_channels=16, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )  # fmt: skip
    parts = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    return FluxControlPipeline(transformer=transformer, **{k: getattr(base, k) for k in parts})


def test_a_flux_control_pipeline_is_refused_naming_its_channels():
    with pytest.raises(ValueError, match=r"FluxControlPipeline.* 32 input channels.*16"):
        flow_family(_tiny_flux_control())


def test_an_sd3_transformer_not_reading_the_vae_latents_is_refused():
    pipe = tiny_sd3_pipeline(seed=0, t5=False)
    pipe.transformer.register_to_config(in_channels=8)  # as an inpainting MMDiT would
    with pytest.raises(ValueError, match=r"StableDiffusion3Pipeline.* 8 input channels.*4"):
        flow_family(pipe)


def test_text_to_image_pipelines_still_load():
    assert flow_family(tiny_sd3_pipeline(seed=0)) == "sd3"
    assert flow_family(tiny_flux_pipeline(seed=0)) == "flux"
