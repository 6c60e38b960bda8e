"""LoRA on an SD3 / FLUX transformer, saved so the stock `load_lora_weights` reads it.

The default targets are the joint attention's projections of both streams, the list of
diffusers' `train_dreambooth_lora_sd3.py` and flow_grpo's `train_sd3_dpo.py` (image stream
`to_q/to_k/to_v/to_out.0`, text stream `add_q_proj/add_k_proj/add_v_proj/to_add_out`); FLUX's
single-stream blocks match `attn.to_q/k/v` too. The file is written by the pipeline class's own
`save_lora_weights` (keys `transformer.<module>.lora_A/B.weight`), so
`StableDiffusion3Pipeline.load_lora_weights(dir)` / `FluxPipeline.load_lora_weights(dir)` load it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..train.config import LoraConfig
from .flow_load import FlowFamily
from .lora import LORA_FILE, check_lora_targets, folded_lora_state, trainable_to_float32

ATTENTION = [
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
]  # fmt: skip
FLOW_TARGETS: dict[str, list[str]] = {"sd3": ATTENTION, "flux": ATTENTION}


def check_flow_targets(transformer: torch.nn.Module, family: FlowFamily,
                       targets: list[str] | None) -> None:  # fmt: skip
    """`check_lora_targets` for a flow transformer (default: its attention projections);
    layers are listed with their parent (`attn.to_q`), as the flow recipes write them."""
    check_lora_targets(transformer, list(targets or FLOW_TARGETS[family]), parent_parts=1)


def add_flow_lora(transformer: torch.nn.Module, family: FlowFamily, cfg: LoraConfig) -> None:
    """Attach a trainable LoRA adapter; every base weight is frozen."""
    from peft import LoraConfig as PeftLoraConfig

    transformer.requires_grad_(False)
    transformer.add_adapter(
        PeftLoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
            lora_dropout=cfg.dropout,
            init_lora_weights="gaussian",
            target_modules=list(cfg.target_modules or FLOW_TARGETS[family]),
        )
    )
    trainable_to_float32(transformer)  # LoRA weights in float32 on a bf16 / fp16 model


def save_flow_lora(out_dir: str | Path, transformer: torch.nn.Module, family: FlowFamily) -> Path:
    """Write `out_dir/pytorch_lora_weights.safetensors` with the pipeline class's writer."""
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    cls = StableDiffusion3Pipeline if family == "sd3" else FluxPipeline
    state = folded_lora_state(transformer)  # alpha / rank folded in: loads at the trained scale
    layers = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    cls.save_lora_weights(str(out_dir), transformer_lora_layers=layers, safe_serialization=True)
    return Path(out_dir) / LORA_FILE
