"""LoRA on the UNet through peft, saved in the format `pipe.load_lora_weights` reads."""

from __future__ import annotations

from pathlib import Path

import torch

from ..train.config import LoraConfig
from .load import Family

# The attention projections, as in the diffusers LoRA training examples.
DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_FILE = "pytorch_lora_weights.safetensors"


# the layer types peft's LoRA wraps (a target naming only other modules fails inside peft)
LORA_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Embedding)


def check_lora_targets(
    model: torch.nn.Module, targets: list[str], parent_parts: int = 0, what: str | None = None
) -> None:
    """Every `lora.target_modules` entry names some layer of `model` (peft's rule: the full
    name or its last dotted parts) that LoRA can wrap; else a ConfigError naming the model's
    linear layers (each as its leaf plus `parent_parts` parents, as targets are written).
    Checked once the model is loaded, before the data is built."""
    from ..config import ConfigError
    from ..suggest import did_you_mean

    modules = [(n, m) for n, m in model.named_modules() if n]
    for target in targets:
        hits = [m for n, m in modules if n == target or n.endswith("." + target)]
        if hits and any(isinstance(m, LORA_LAYERS) for m in hits):
            continue
        linear = [n for n, m in modules if isinstance(m, torch.nn.Linear)]
        # `to_out.0`: a numbered child is named with its parent
        leaves = sorted(
            {".".join(n.split(".")[-(parent_parts + (2 if n[-1].isdigit() else 1)) :])
             for n in linear}
        )  # fmt: skip
        what = what or type(model).__name__
        found = (
            f"names {type(hits[0]).__name__} layers of the {what}, which LoRA cannot wrap "
            "(it wraps linear, convolution and embedding layers)"
            if hits
            else f"names no layer of the {what}"
        )
        raise ConfigError(
            f"lora.target_modules: '{target}' {found}; {did_you_mean(target, leaves)} "
            f"(its linear layers: {', '.join(leaves[:24])}{', ...' if len(leaves) > 24 else ''})"
        )


def check_targets(unet: torch.nn.Module, targets: list[str] | None) -> None:
    """`check_lora_targets` for a UNet (default: the attention projections)."""
    check_lora_targets(unet, list(targets or DEFAULT_TARGETS), what="UNet")


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
    trainable_to_float32(unet)


def trainable_to_float32(model: torch.nn.Module) -> None:
    """peft gives an adapter its base layer's dtype; a bf16 / fp16 model's LoRA weights are
    kept in float32 so the optimizer's small updates are not rounded away (as diffusers'
    scripts do with `cast_training_params`); peft casts the layer input to them and the sum
    back to the base dtype."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


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
    """The UNet's LoRA in peft's key format (`<layer>.lora_A.weight`), as the file holds it.

    Not passed through `convert_state_dict_to_diffusers`, as diffusers' training examples do:
    that renames only the attention projections (`to_q.lora.down.weight`) and leaves the other
    targets in peft's names; given attention beside `proj_in`, `proj_out` or a resnet layer
    (`conv1`, `time_emb_proj`), `load_lora_weights` dropped every attention layer of such a
    mixed file with only a warning, so the stock pipeline (and `load_tuned`) ran another
    model. peft's names load whole for any target set (tested)."""
    return folded_lora_state(unet)


def save_lora(out_dir: str | Path, unet: torch.nn.Module, family: Family) -> Path:
    """Write `out_dir/pytorch_lora_weights.safetensors` with the pipeline class's own writer."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    layers = {k: v.detach().to("cpu").contiguous() for k, v in lora_state_dict(unet).items()}
    cls.save_lora_weights(str(out_dir), unet_lora_layers=layers, safe_serialization=True)
    return Path(out_dir) / LORA_FILE
