"""Validation sampling decodes with the VAE in its own dtype, never in the autocast's.

`model.dtype: bfloat16` / `float16` keeps the SD / SDXL VAE in float32 (the SDXL VAE overflows
in fp16), but the pipeline hands it the UNet's half-precision latents: without autocast
(`train.mixed_precision: no`, allowed for LoRA) the validation grid crashed the run after its
last step ("Input type (c10::BFloat16) and bias type (float) should be the same"), and under
the autocast of `mixed_precision: fp16` / `bf16` (reporting.validate) the float32 VAE decoded
in half precision anyway: the fp16 overflow the float32 VAE is there to avoid.
"""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config

from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import train

VALIDATION = {"enabled": True, "prompts": ["a red circle on a blue background"], "steps": 2}


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_a_bf16_lora_run_without_autocast_writes_its_validation_grid(tmp_path, family):
    out = tmp_path / "run"
    cfg = tiny_config(save_tiny(tmp_path, family), out, validation=VALIDATION,
                      train={"max_steps": 1})  # fmt: skip
    cfg.model.dtype = "bfloat16"
    train(cfg, DiffusionRecipe)
    assert (out / "validation" / "step-000001.png").is_file()


def test_the_vae_decodes_in_float32_under_a_half_precision_autocast(tmp_path):
    from accelerate import Accelerator

    cfg = tiny_config(save_tiny(tmp_path, "sdxl"), tmp_path / "run", validation=VALIDATION)
    recipe = DiffusionRecipe(cfg, Accelerator(cpu=True))
    vae = recipe.diffusion.pipe.vae
    seen: list[torch.dtype] = []
    hook = vae.decoder.conv_out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):  # as reporting.validate's
            recipe.validate(0)
    finally:
        hook.remove()
    assert seen and all(dtype == torch.float32 for dtype in seen)
    # the UNet still ran under the autocast, and the VAE's decode is its own again after
    assert "decode" not in vae.__dict__
