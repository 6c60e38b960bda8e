"""Loading and sampling a toy-sd folder, and its held-out quality (mean `toy:fidelity`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...world import sample_prompts


def load_pipeline(path: str | Path):
    """Load a toy-sd folder the way any SD1.5 folder loads, with the fast sampler it ships."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def sample(pipe, prompts: list[str], seed: int, steps: int = 20, guidance: float = 2.5):
    """Images [B,3,H,W] in [0,1] for `prompts`, one seeded generator per prompt."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(
        prompts, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
        output_type="pt",
    )  # fmt: skip
    return out.images


def evaluate_toy_sd(
    path: str | Path, n: int = 200, seed: int = 1234, steps: int = 20, guidance: float = 2.5,
    batch: int = 50,
) -> dict[str, float]:  # fmt: skip
    """Mean `toy:fidelity` on `n` held-out prompts and seconds per image."""
    from ...rewards import fidelity

    pipe = load_pipeline(path)
    prompts = [p.text for p in sample_prompts(n, "heldout", seed)]
    scores = []
    start = time.perf_counter()
    for i in range(0, n, batch):
        images = sample(pipe, prompts[i : i + batch], seed + i, steps, guidance)
        scores.append(fidelity(images, prompts[i : i + batch]))
    seconds = (time.perf_counter() - start) / n
    fid = torch.cat(scores)
    return {
        "heldout_fidelity_mean": float(fid.mean()),
        "heldout_fidelity_median": float(fid.median()),
        "n": n,
        "seconds_per_image_batched": seconds,
    }
