"""Build toy-flow: cache toy-sd's latents, train the MMDiT by rectified flow, save the
StableDiffusion3Pipeline, evaluate it, write its card."""

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
    """Train toy-flow from toy-sd's VAE and text encoder (resuming from `work_dir`) and save
    it to `out_dir`."""
    from diffusers import StableDiffusion3Pipeline

    settings = settings or ToyFlowSettings()
    toy_sd = Path(toy_sd)
    if not (toy_sd / "vae").is_dir():
        raise FileNotFoundError(f"toy-flow starts from toy-sd, which is not built at {toy_sd}")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer, text_encoder, text_encoder_2, vae, transformer, scheduler = build_models(
        settings.seed, toy_sd, layers=settings.layers, width=settings.width
    )
    vae.eval()
    # toy-sd's VAE and text encoder files (name, size, mtime): a rebuilt toy-sd gets new
    # latents, and a checkpoint started from another toy-sd is not resumed
    base = fingerprint_of({"vae": weight_files(toy_sd / "vae"),
                           "text": weight_files(toy_sd / "text_encoder")})  # fmt: skip
    latents_key = fingerprint_of({"base": base, "n": settings.num_images, "seed": settings.seed})
    prompts, mean, std, shift, scale = training_latents(vae, settings, work, latents_key,
                                                        progress, position)  # fmt: skip
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
