"""A VAE whose config says `force_upcast: true` is kept in float32, an explicit `model.vae` too.

The loaders keep a pipeline's own VAE in float32 when `model.dtype` is half (the SDXL VAE
overflows in fp16), but an explicit `model.vae` was loaded in `model.dtype` whatever it was:
`stabilityai/sdxl-vae` (force_upcast: true) given there ran in fp16. diffusers' SDXL pipeline
upcasts such a VAE when it decodes, but mmalign's Encoder encodes with it as loaded, and would
have cached NaN / inf latents. An fp16-safe VAE (madebyollin/sdxl-vae-fp16-fix says
force_upcast: false) still loads in `model.dtype`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusion_helpers import save_tiny

from mmalign.diffusion import load_pipeline
from mmalign.diffusion.load import _tiny_vae


def _save_vae(root: Path, force_upcast: bool) -> Path:
    vae = _tiny_vae(seed=5)
    vae.register_to_config(force_upcast=force_upcast)
    path = root / f"vae-upcast-{force_upcast}"
    vae.save_pretrained(path)
    return path


def test_an_explicit_vae_that_needs_upcasting_stays_float32(tmp_path, capsys):
    vae = _save_vae(tmp_path, force_upcast=True)
    model = load_pipeline(save_tiny(tmp_path, "sdxl"), dtype="float16", vae=str(vae))
    assert model.unet.dtype == torch.float16
    assert model.pipe.vae.dtype == torch.float32
    assert model.pipe.vae.config.force_upcast
    # the weights are the saved VAE's, unrounded
    saved = _tiny_vae(seed=5).state_dict()
    for name, value in model.pipe.vae.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert "force_upcast" in capsys.readouterr().out  # the user is told why


def test_bfloat16_keeps_an_upcasting_vae_in_bfloat16(tmp_path, capsys):
    """force_upcast is about float16's range; bfloat16 has float32's (diffusers upcasts only
    fp16 VAEs), so a bf16 model's explicit VAE loads in bf16 as it did before the check."""
    vae = _save_vae(tmp_path, force_upcast=True)
    model = load_pipeline(save_tiny(tmp_path, "sdxl"), dtype="bfloat16", vae=str(vae))
    assert model.pipe.vae.dtype == torch.bfloat16
    assert "force_upcast" not in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_an_fp16_safe_vae_loads_in_the_model_dtype(tmp_path, dtype):
    vae = _save_vae(tmp_path, force_upcast=False)
    model = load_pipeline(save_tiny(tmp_path, "sdxl"), dtype=dtype, vae=str(vae))
    assert model.pipe.vae.dtype == getattr(torch, dtype)


def test_a_full_precision_model_keeps_an_explicit_vae_in_float32(tmp_path):
    vae = _save_vae(tmp_path, force_upcast=False)
    model = load_pipeline(save_tiny(tmp_path, "sd"), vae=str(vae))
    assert model.pipe.vae.dtype == torch.float32


def test_the_pipelines_own_vae_stays_float32_for_sd_and_flow_models(tmp_path):
    from mmalign.diffusion.flow_load import load_flow_pipeline
    from mmalign.diffusion.flow_tiny import tiny_sd3_pipeline

    model = load_pipeline(save_tiny(tmp_path, "sdxl"), dtype="float16")
    assert model.pipe.vae.dtype == torch.float32
    path = tmp_path / "tiny-sd3"
    tiny_sd3_pipeline(seed=0).save_pretrained(path)
    flow = load_flow_pipeline(path, dtype="bfloat16")
    assert flow.transformer.dtype == torch.bfloat16
    assert flow.pipe.vae.dtype == torch.float32


def test_a_recipe_encodes_with_the_float32_vae(tmp_path):
    from accelerate import Accelerator
    from diffusion_helpers import tiny_config

    from mmalign.diffusion.recipe import DiffusionRecipe

    cfg = tiny_config(save_tiny(tmp_path, "sdxl"), tmp_path / "run")
    cfg.model.dtype, cfg.model.vae = "float16", str(_save_vae(tmp_path, force_upcast=True))
    recipe = DiffusionRecipe(cfg, Accelerator(cpu=True))
    seen: list[torch.dtype] = []
    vae = recipe.diffusion.pipe.vae
    hook = vae.encoder.conv_out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        batch = recipe.collate([recipe.dataset[0], recipe.dataset[1]])
        out = recipe.to_device(batch, [0, 1], torch.device("cpu"))
    finally:
        hook.remove()
    assert seen and all(dtype == torch.float32 for dtype in seen)
    assert torch.isfinite(out["latents"]).all()
