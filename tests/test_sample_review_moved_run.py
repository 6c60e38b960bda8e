"""`load_tuned` reads a training output_dir's final weights from that folder, wherever it now is:
the path in `mmalign_run.json` is where the run was written, which a moved run no longer has
and a copied run still points back to (another run's weights once the original changes)."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config
from safetensors.torch import load_file, save_file

from mmalign.diffusion import load_tuned
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import train


def _unet_out(model) -> torch.Tensor:
    unet = model.pipe.unet
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    x = torch.randn(1, unet.config.in_channels, size, size, generator=g)
    text = torch.randn(1, 5, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([500]), text).sample


@pytest.mark.parametrize("lora", [{"rank": 4}, None], ids=["lora", "full"])
def test_a_copied_or_moved_run_loads_its_own_weights(tmp_path, lora) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(save_tiny(tmp_path, "sd"), out, lora=lora,
                      train={"max_steps": 2, "learning_rate": 1e-2})  # fmt: skip
    train(cfg, DiffusionRecipe)
    trained = _unet_out(load_tuned(out))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    # the original's weights change: the copy still loads what it holds
    weights = out / "pytorch_lora_weights.safetensors" if lora else out / "unet"
    files = [weights] if lora else list(weights.glob("*.safetensors"))
    for f in files:
        save_file({k: torch.zeros_like(v) for k, v in load_file(f).items()}, str(f))
    assert not torch.equal(_unet_out(load_tuned(out)), trained)
    torch.testing.assert_close(_unet_out(load_tuned(copy)), trained, atol=0, rtol=0)

    # the original is gone: the copy (a moved run) still loads
    shutil.rmtree(out)
    torch.testing.assert_close(_unet_out(load_tuned(copy)), trained, atol=0, rtol=0)
