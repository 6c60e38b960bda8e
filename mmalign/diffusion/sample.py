"""Sampling from a diffusion pipeline: a seed per image, and each family's default sampler."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .flow_load import sampling_kwargs

# StableDiffusion3Pipeline's and FluxPipeline's defaults: (steps, guidance)
FLOW_DEFAULTS = {"sd3": (28, 7.0), "flux": (28, 3.5)}
TOY_FLOW_GUIDANCE = 3.0  # toy-flow's card


def sampling_defaults(model, steps: int | None, guidance: float | None) -> tuple[int, float]:
    """The toy cards' samplers (20 steps; guidance 2.5 for toy-sd, 3.0 for toy-flow); SD3 /
    FLUX: their pipelines' own defaults; else 50 steps, guidance 7.5 (SD1.5) or 5.0 (SDXL).
    An explicit `steps` / `guidance` wins."""
    from ..toy.paths import MODELS_DIR

    toy = str(model.source).startswith(str(MODELS_DIR))
    if model.family in FLOW_DEFAULTS:
        flow_steps, flow_guidance = (20, TOY_FLOW_GUIDANCE) if toy else FLOW_DEFAULTS[model.family]
        return steps or flow_steps, flow_guidance if guidance is None else guidance
    default_steps = 20 if toy else 50
    default_guidance = 2.5 if toy else (5.0 if model.family == "sdxl" else 7.5)
    return steps or default_steps, default_guidance if guidance is None else guidance


@torch.no_grad()
def generate_seeded(
    pipe,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    guidance: float,
    batch_size: int,
    resolution: int | None = None,
    desc: str = "generate",
    progress: bool = True,
) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1]; image i uses a generator seeded with `seeds[i]`."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = (pipe.unet if hasattr(pipe, "unet") else pipe.transformer).device
    out = []
    size = {"height": resolution, "width": resolution} if resolution else {}
    size.update(sampling_kwargs(pipe))
    with tqdm(total=len(prompts), desc=desc, unit="img", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            gens = [
                torch.Generator(device).manual_seed(s) for s in seeds[start : start + batch_size]
            ]
            images = pipe(
                chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                output_type="pt", **size,
            ).images  # fmt: skip
            out.append(images.float().cpu())
            bar.update(len(chunk))
    return torch.cat(out)


def generate(
    pipe,
    prompts: Sequence[str],
    *,
    seed: int,
    steps: int,
    guidance: float,
    batch_size: int,
    resolution: int | None = None,
    desc: str = "generate",
) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1]; prompt i always uses generator seed `seed + i`."""
    seeds = [seed + i for i in range(len(prompts))]
    return generate_seeded(
        pipe, prompts, seeds, steps=steps, guidance=guidance, batch_size=batch_size,
        resolution=resolution, desc=desc,
    )  # fmt: skip


def to_pil_images(images: torch.Tensor) -> list:
    """[N,3,H,W] tensors in [0,1] as PIL images (rounded to 8 bits)."""
    from PIL import Image

    arrays = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]
