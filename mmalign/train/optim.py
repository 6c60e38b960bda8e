"""Optimizers and learning-rate schedules for the training loop."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import TrainConfig


def float32_master_weights(model: torch.nn.Module) -> None:
    """Cast the trainable parameters of a half-precision model (`model.dtype: bfloat16` or
    `float16`) to float32; the frozen ones keep their dtype.

    A bf16 weight rounds away a change below half its ulp (2^-9 to 2^-8 of the weight), and
    an AdamW step moves a weight by about lr: at lr 1e-6 a bf16 full fine-tune of the tiny
    SD UNet kept 99% of its weights as they started. As diffusers' `cast_training_params` and
    accelerate's mixed precision: float32 master weights, the compute under the autocast of
    train.mixed_precision. LoRA's adapters are float32 already (diffusion/lora.py, peft)."""
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig, lr: float):
    params = list(params)
    if not params:
        raise ValueError("nothing to train: the model has no parameter with requires_grad")
    if cfg.optimizer == "adamw":
        # foreach: one multi-tensor update instead of a Python loop over the parameters (the
        # CPU default); the same numbers bit for bit, 1.6x faster over a LoRA's ~128 tensors.
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        # A fixed lr (the authors' SDXL setup), not Adafactor's relative step size.
        return Adafactor(
            params, lr=lr, weight_decay=cfg.weight_decay, relative_step=False,
            scale_parameter=False, warmup_init=False,
        )  # fmt: skip
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError(
                "train.optimizer: adamw8bit needs bitsandbytes: pip install 'mmalign[gpu]'"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer: unknown optimizer {cfg.optimizer!r}")


def build_scheduler(optimizer, cfg: TrainConfig):
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
        num_training_steps=cfg.max_steps,
    )  # fmt: skip
