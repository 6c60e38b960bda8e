"""Tiny flow-matching runs shared by the flow tests: saved tiny SD3 / FLUX pipelines, batches."""

from __future__ import annotations

from pathlib import Path

import torch

from mmalign.diffusion.flow_load import FlowModel, flow_model
from mmalign.diffusion.flow_tiny import tiny_flux_pipeline, tiny_sd3_pipeline

MAX_SEQUENCE = 16  # T5 tokens in tests (SD3's pipelines use 256, FLUX's 512)


def save_tiny_flow(root: Path, family: str = "sd3", **options: bool) -> Path:
    """A tiny random pipeline written with `save_pretrained` (loaded back with
    `from_pretrained` by the code under test)."""
    suffix = "".join(f"-{k}{int(v)}" for k, v in sorted(options.items()))
    path = root / f"tiny-{family}{suffix}"
    if not (path / "model_index.json").is_file():
        make = tiny_sd3_pipeline if family == "sd3" else tiny_flux_pipeline
        make(seed=0, **options).save_pretrained(path)
    return path


def tiny_flow(family: str = "sd3", **options: bool) -> FlowModel:
    make = tiny_sd3_pipeline if family == "sd3" else tiny_flux_pipeline
    pipe = make(seed=0, **options)
    pipe.set_progress_bar_config(disable=True)
    return flow_model(pipe, f"tiny-{family}")


def encoded_batch(model: FlowModel, b: int = 3, same: bool = False) -> dict[str, torch.Tensor]:
    """Random latents [B,2,4,16,16] and the real text embeddings of a toy prompt."""
    from mmalign.diffusion.flow_encode import FlowEncoder

    g = torch.Generator().manual_seed(1)
    latents = torch.randn(b, 2, 4, 16, 16, generator=g)
    if same:
        latents[:, 1] = latents[:, 0]
    encoder = FlowEncoder(model, max_sequence_length=MAX_SEQUENCE)
    text = encoder.text(["a red circle on a blue background"] * b)
    return {"latents": latents, **text, "label": torch.ones(b)}


def empty_text(model: FlowModel) -> dict[str, torch.Tensor]:
    from mmalign.diffusion.flow_encode import FlowEncoder

    return FlowEncoder(model, max_sequence_length=MAX_SEQUENCE).empty()
