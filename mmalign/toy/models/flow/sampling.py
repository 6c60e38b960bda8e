"""Loading and sampling a toy-flow folder, and its held-out quality (`toy:fidelity` and its
colour / shape / background thirds)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...world import sample_prompts
from ..sd.model import TEXT_MAX_LENGTH


def load_pipeline(path: str | Path):
    """Load a toy-flow folder the way an SD3 folder loads without its T5 encoder."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(pipe, prompts: list[str], seed: int, steps: int = 20, guidance: float = 3.0):
    """Images [B,3,H,W] in [0,1] for `prompts`, one seeded generator per prompt; the T5 zeros
    are as long as the CLIP tokenizer's length, as toy-flow was trained."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
        output_type="pt", max_sequence_length=TEXT_MAX_LENGTH,
    )  # fmt: skip
    return out.images


def evaluate_toy_flow(
    path: str | Path, n: int = 200, seed: int = 1234, steps: int = 20, guidance: float = 3.0,
    batch: int = 50,
) -> dict[str, float]:  # fmt: skip
    """Mean `toy:fidelity` and its thirds on `n` held-out prompts, the pass rates of the hue /
    shape / background checks with their 95% bootstrap intervals, and seconds per image."""
    from ....stats import bootstrap_ci
    from ...analysis import read_images
    from ...rewards import fidelity_parts, prompt_checks

    pipe = load_pipeline(path)
    prompts = [p.text for p in sample_prompts(n, "heldout", seed)]
    parts: dict[str, list[torch.Tensor]] = {}
    checks: dict[str, list[torch.Tensor]] = {}
    start = time.perf_counter()
    for i in range(0, n, batch):
        images = sample(pipe, prompts[i : i + batch], seed + i, steps, guidance)
        reading = read_images(images)
        for key, value in fidelity_parts(images, prompts[i : i + batch], reading).items():
            parts.setdefault(key, []).append(value)
        for key, value in prompt_checks(images, prompts[i : i + batch], reading).items():
            checks.setdefault(key, []).append(value)
    seconds = (time.perf_counter() - start) / n
    third = {k: torch.cat(v) for k, v in parts.items()}
    passed = {k: torch.cat(v) for k, v in checks.items()}
    fid = (third["background"] + third["color"] + third["shape"]) / 3
    return {
        "heldout_fidelity_mean": float(fid.mean()),
        "heldout_fidelity_median": float(fid.median()),
        **{f"heldout_{k}_mean": float(v.mean()) for k, v in third.items()},
        **{f"heldout_{k}_pass": float(v.mean()) for k, v in passed.items()},
        **{f"heldout_{k}_pass_ci95": bootstrap_ci(v) for k, v in passed.items()},
        "n": n,
        "seconds_per_image_batched": seconds,
    }
