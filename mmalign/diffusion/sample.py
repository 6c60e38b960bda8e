"""Sampling from a diffusion pipeline: a seed per image, and each family's default sampler."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .flow_load import check_resolution, sampling_kwargs

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


def sampling_resolution(model, requested: int | None, run: Mapping[str, Any] | None) -> int:
    """The side to sample at: `requested` (`--resolution`), else the resolution the training
    run `run` (its `mmalign_run.json`) trained at, else the model's default. A requested side
    must be a positive multiple of the latent grid's step (the VAE factor; twice it for SD3 /
    FLUX, whose transformers take 2x2 latent patches) and no larger than an SD3 transformer's
    position embedding covers (`flow_load.max_resolution`), else an InputError."""
    from ..config import InputError

    if requested is not None:
        step = model.vae_scale * (2 if hasattr(model.pipe, "transformer") else 1)
        if requested < step or requested % step:
            raise InputError(
                f"--resolution {requested}: give a positive multiple of {step} (this model's "
                f"latent grid; its default is {model.default_resolution})"
            )
        check_resolution(model.pipe, requested, "--resolution", InputError)
        return int(requested)
    run = run or {}
    trained = run.get("resolution") or ((run.get("config") or {}).get("diffusion") or {}).get(
        "resolution"
    )
    if trained:
        check_resolution(model.pipe, int(trained), "the training run's resolution", InputError)
        return int(trained)
    return pipeline_resolution(model.pipe) or int(model.default_resolution)


def pipeline_resolution(pipe) -> int | None:
    """The side `pipe` samples at when given no size, as diffusers computes it
    (`default_sample_size`, else the UNet's `sample_size`, times the VAE factor); None when it
    is not one square side."""
    size = getattr(pipe, "default_sample_size", None)
    if size is None:
        unet = getattr(pipe, "unet", None)
        size = getattr(getattr(unet, "config", None), "sample_size", None)
    factor = getattr(pipe, "vae_scale_factor", None)
    if not isinstance(size, int) or not isinstance(factor, int):
        return None
    return size * factor


def size_argument(model, resolution: int) -> int | None:
    """`resolution` for `generate`, None where it is the pipeline's own default: the pipeline
    then samples exactly as when no size was given (and a win rate's saved images stay
    valid)."""
    return None if resolution == pipeline_resolution(model.pipe) else resolution


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
    """Images [N,3,H,W] in [0,1]; image i uses a generator seeded with `seeds[i]`. The VAE
    decodes in its own dtype (`vae_in_own_precision`): a half-precision model keeps a float32
    VAE, which its half-precision latents would otherwise not fit."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = (pipe.unet if hasattr(pipe, "unet") else pipe.transformer).device
    out = []
    size = {"height": resolution, "width": resolution} if resolution else {}
    size.update(sampling_kwargs(pipe))
    vae = getattr(getattr(pipe, "pipe", pipe), "vae", None)  # ppd_users.UserPipeline wraps one
    own = vae_in_own_precision(vae) if vae is not None else contextlib.nullcontext()
    with own, tqdm(total=len(prompts), desc=desc, unit="img", disable=not progress) as bar:
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


def sample_grid(images: torch.Tensor, prompts: Sequence[str], seed: int, header: str) -> Any:
    """The grid `mmalign sample` saves: one image a row, labelled with its prompt and the seed
    `generate` drew it with (`seed + i` for row i: a prompt's `--n` images, then the next
    prompt's), under `header` (the sampler settings), which wraps to the column's width."""
    from ..grid import image_grid

    labels = [f"seed {seed + i}: {p}" for i, p in enumerate(prompts)]
    return image_grid([to_pil_images(images)], [header], labels)


def save_sample_grid(
    images: torch.Tensor, prompts: Sequence[str], seed: int, header: str, out: str | Path
) -> Path:
    """`sample_grid` saved at `out` (its folder made); returns the path, resolved, for the
    `grid:` line `mmalign sample` and `sample --ppd` print."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(images, prompts, seed, header).save(path)
    return path.resolve()


@contextlib.contextmanager
def vae_in_own_precision(vae: torch.nn.Module) -> Iterator[None]:
    """Inside the block `vae.decode` casts its latents to the VAE's dtype and runs outside any
    autocast; it is the class's own again after.

    A half-precision model keeps its VAE in float32 (load.py: the SDXL VAE overflows in fp16),
    but the pipelines hand the decoder the denoiser's bf16 / fp16 latents: without autocast
    that fails ("Input type (c10::BFloat16) and bias type (float)"), and under the training
    loop's fp16 autocast the float32 VAE would decode in fp16 after all. Nested, the
    outer block's wrapper stays."""
    if "decode" in vae.__dict__:  # inside another such block already
        yield
        return
    decode = vae.decode

    def own_precision(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(z.device.type, enabled=False):
            return decode(z.to(next(vae.parameters()).dtype), *args, **kwargs)

    vae.decode = own_precision
    try:
        yield
    finally:
        del vae.decode


def to_pil_images(images: torch.Tensor) -> list:
    """[N,3,H,W] tensors in [0,1] as PIL images (rounded to 8 bits)."""
    from PIL import Image

    arrays = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")  # SD / SDXL / SD3 / FLUX
_OWN_PRECISION = "_mmalign_own_precision"  # marks a forward already wrapped (nested blocks)


@contextlib.contextmanager
def text_encoders_in_own_precision(pipe: Any) -> Iterator[None]:
    """Inside the block each of the pipeline's text encoders runs outside any autocast, in its
    own dtype, as training encodes prompts (the recipes' `to_device` and the pre-encoding cache
    run outside the loop's autocast); each is its class's own again after.

    Validation samples under the training autocast (train/reporting.py), and fp16 autocast
    runs every matmul of T5 in float16, its feed-forward output `wo` included: transformers
    keeps that layer in float32 (`_keep_in_fp32_modules`) because T5's activations overflow
    float16 (T5, Raffel et al. 2020, was trained in bfloat16), and autocast undoes it: inf in
    `wo`, NaN prompt embeddings, black validation images from SD3 and FLUX. diffusers' SD3 and
    FLUX training scripts encode prompts outside autocast too."""
    wrapped: list[tuple[torch.nn.Module, Any]] = []
    for name in TEXT_ENCODERS:
        module = getattr(pipe, name, None)
        if module is None or getattr(module.forward, _OWN_PRECISION, False):
            continue
        forward = module.forward

        def own_precision(*args: Any, _m: Any = module, _f: Any = forward, **kwargs: Any) -> Any:
            # the encoder's own device type: autocast is switched on and off per device type
            with torch.autocast(next(_m.parameters()).device.type, enabled=False):
                return _f(*args, **kwargs)

        setattr(own_precision, _OWN_PRECISION, True)
        # a forward set on the instance before (an offloading hook) is put back after
        wrapped.append((module, module.__dict__.get("forward")))
        module.forward = own_precision
    try:
        yield
    finally:
        for module, before in wrapped:
            if before is None:
                del module.forward
            else:
                module.forward = before
