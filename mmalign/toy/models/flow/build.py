"""Build toy-flow: train its VAE and cache the latents, train the MMDiT by rectified flow,
save the StableDiffusion3Pipeline, evaluate it, write its card."""

from __future__ import annotations

import time
from pathlib import Path

from ....weights import weight_files
from ..checkpoint import fingerprint_of
from ..finish import save_and_measure
from .card import write_card
from .model import build_models
from .sampling import evaluate_toy_flow
from .training import ToyFlowSettings, train_transformer, training_latents


def build_toy_flow(
    out_dir: str | Path, work_dir: str | Path, toy_sd: str | Path,
    settings: ToyFlowSettings | None = None, progress: bool = True, position: int = 0,
) -> dict:  # fmt: skip
    """Train toy-flow (its VAE, then the MMDiT and toy-sd's two CLIP encoders; resuming from
    `work_dir`) and save it to `out_dir`."""
    from diffusers import StableDiffusion3Pipeline

    settings = settings or ToyFlowSettings()
    toy_sd = Path(toy_sd)
    if not (toy_sd / "text_encoder").is_dir():
        raise FileNotFoundError(f"toy-flow starts from toy-sd, which is not built at {toy_sd}")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer, text_encoder, text_encoder_2, vae, transformer, scheduler = build_models(
        settings.seed, toy_sd, layers=settings.layers, width=settings.width,
        vae_channels=settings.vae_channels,
    )  # fmt: skip
    # toy-sd's text encoder files (name, size, mtime): a transformer checkpoint started from
    # another toy-sd is not resumed
    base = fingerprint_of({"text": weight_files(toy_sd / "text_encoder")})
    prompts, mean, std, shift, scale = training_latents(vae, settings, work, progress, position)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    train_transformer(
        transformer, text_encoder, text_encoder_2, tokenizer, prompts, mean, std, shift, scale,
        settings, work, progress, position=position, base=base,
    )  # fmt: skip
    out = Path(out_dir)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    metrics = save_and_measure(pipe, out, start, evaluate_toy_flow, settings)
    write_card(out, pipe, metrics)
    return metrics
