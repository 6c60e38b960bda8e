"""LoRA on the UNet through peft, saved in the format `pipe.load_lora_weights` reads."""

from __future__ import annotations

from pathlib import Path

import torch

from ..train.config import LoraConfig
from .load import Family

# The attention projections, as in the diffusers LoRA training examples.
DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_FILE = "pytorch_lora_weights.safetensors"


def check_targets(unet: torch.nn.Module, targets: list[str] | None) -> None:
    """Every `lora.target_modules` entry names some UNet layer (peft's rule: the full name or
    its last dotted parts); checked once the model is loaded, before the data is built."""
    names = [name for name, _ in unet.named_modules() if name]
    for target in targets or DEFAULT_TARGETS:
        if not any(n == target or n.endswith("." + target) for n in names):
            from ..config import ConfigError
            from ..suggest import did_you_mean

            linear = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]
            # `to_out.0`: a numbered child is named with its parent
            leaves = {".".join(n.split(".")[-2 if n[-1].isdigit() else -1 :]) for n in linear}
            raise ConfigError(
                f"lora.target_modules: '{target}' names no layer of the UNet; "
                f"{did_you_mean(target, leaves)}"
            )


def add_lora(unet: torch.nn.Module, cfg: LoraConfig) -> None:
    """Attach a trainable LoRA adapter; every base weight is frozen."""
    from peft import LoraConfig as PeftLoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        PeftLoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
            lora_dropout=cfg.dropout,
            init_lora_weights="gaussian",
            target_modules=list(cfg.target_modules or DEFAULT_TARGETS),
        )
    )


def folded_lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """peft's LoRA weights of `model` with each layer's scale `alpha / rank` folded into its
    `lora_B`, so the file holds the trained update `B A alpha / rank` at scale 1.

    diffusers' `load_lora_weights` reads a plain LoRA file at alpha = rank (scale 1); without
    the fold a run trained with `lora.alpha` != `lora.rank` (the SD3 / FLUX recipes' 64 / 32)
    would load at the wrong strength, in stock pipelines and in `mmalign sample` alike. Folding
    needs no adapter metadata, so any loader of the format reads it the same way."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model)
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict) or scaling.get("default", 1.0) == 1.0:
            continue
        key = f"{name}.lora_B.weight"
        if key not in state:
            raise RuntimeError(f"LoRA export: {key} is not in peft's state dict")
        state[key] = state[key] * scaling["default"]
    return state


def lora_state_dict(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_state_dict_to_diffusers

    return convert_state_dict_to_diffusers(folded_lora_state(unet))


def save_lora(out_dir: str | Path, unet: torch.nn.Module, family: Family) -> Path:
    """Write `out_dir/pytorch_lora_weights.safetensors` with the pipeline class's own writer."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    layers = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(unet).items()}
    cls.save_lora_weights(str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    return Path(out_dir) / LORA_FILE
