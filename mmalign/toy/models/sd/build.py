"""Build toy-sd from scratch: train its stages, save the pipeline, evaluate it, write its card."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..clip_tokenizer import save_clip_tokenizer
from ..finish import save_and_measure
from .card import write_card
from .model import TEXT_MAX_LENGTH, build_models, toy_words
from .sampling import evaluate_toy_sd
from .training import (
    ToySDSettings,
    encode_latents,
    loss_weights,
    train_unet,
    train_vae,
    training_images,
)


def build_toy_sd(
    out_dir: str | Path, work_dir: str | Path, settings: ToySDSettings | None = None,
    progress: bool = True, position: int = 0,
) -> dict:  # fmt: skip
    """Train toy-sd from scratch (resuming from `work_dir`) and save it to `out_dir`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    settings = settings or ToySDSettings()
    loss_weights(torch.ones(1), settings.loss_weight, settings.snr_gamma)  # fail before training
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tokenizer_dir = save_clip_tokenizer(toy_words(), work / "tokenizer", TEXT_MAX_LENGTH)
    tokenizer, text_encoder, vae, unet, scheduler = build_models(settings.seed, tokenizer_dir)
    prompts, flat, vae_images = training_images(settings)
    train_vae(vae, vae_images, settings, work, progress, position)
    vae.eval()
    mean, std = encode_latents(vae, flat, work, progress, position, settings.fingerprint("vae"))
    scaling = float(1 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    train_unet(
        unet, text_encoder, tokenizer, scheduler, prompts, mean, std, scaling, settings, work,
        progress, position=position,
    )  # fmt: skip
    out = Path(out_dir)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        # Trained as DDPM; ships DDIM so 20 steps sample well.
        # "trailing" spacing starts sampling at t = T, where training put pure noise.
        scheduler=DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    metrics = save_and_measure(pipe, out, start, evaluate_toy_sd, settings)
    write_card(out, unet, vae, text_encoder, tokenizer, metrics)
    return metrics
