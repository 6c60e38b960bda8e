"""A bf16 / fp16 UNet's LoRA weights train in float32, as the flow recipe's already did.

peft gives an adapter its base layer's dtype: on a bf16 UNet (`model.dtype: bfloat16`) an
AdamW step at a LoRA learning rate (1e-5) left 98% of lora_A's entries unchanged, rounded away.
"""

from __future__ import annotations

import torch
from diffusion_helpers import save_tiny, tiny_config

from mmalign.diffusion import tiny_sd_pipeline
from mmalign.diffusion.lora import add_lora
from mmalign.train import LoraConfig


def test_lora_on_a_bf16_unet_is_float32_and_the_output_stays_bf16():
    unet = tiny_sd_pipeline().unet.to(torch.bfloat16)
    add_lora(unet, LoraConfig(rank=4))
    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in unet.parameters() if not p.requires_grad)
    x = torch.randn(1, 4, 16, 16, dtype=torch.bfloat16)
    text = torch.randn(1, 7, 32, dtype=torch.bfloat16)
    assert unet(x, torch.tensor([10]), text).sample.dtype == torch.bfloat16


def test_a_small_learning_rate_moves_every_lora_weight_of_a_bf16_recipe(tmp_path):
    from accelerate import Accelerator

    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.optim import build_optimizer

    cfg = tiny_config(save_tiny(tmp_path), tmp_path / "out")
    cfg.model.dtype = "bfloat16"
    recipe = DiffusionRecipe(cfg, Accelerator(cpu=True))
    params = {n: p for n, p in recipe.model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in params.items() if "lora_A" in n}
    optimizer = build_optimizer(params.values(), cfg.train, 1e-5)
    for p in params.values():
        p.grad = torch.ones_like(p)  # Adam's first step moves every weight by lr
    optimizer.step()
    unchanged = sum(int((before[n] == params[n]).sum()) for n in before)
    assert unchanged == 0
