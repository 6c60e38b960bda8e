"""toy-sd's model card (README.md), written from the build's metrics and settings."""

from __future__ import annotations

from pathlib import Path

_WEIGHT_TEXT = {
    "v": "plain v-prediction MSE (no min-SNR weighting, which starves the high-noise steps "
    "that decide the shape)",
    "v_capped": "v-prediction MSE capped at low noise (weight min(1, {g:g} / (SNR + 1)))",
    "min_snr": "min-SNR-{g:g} loss weights",
}


def write_card(out: Path, unet, vae, text_encoder, tokenizer, metrics: dict) -> None:
    """The model card: how toy-sd was trained and what it measured."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    s = metrics["settings"]
    weighting = _WEIGHT_TEXT[s["loss_weight"]].format(g=s["snr_gamma"])
    card = f"""# toy-sd

A tiny Stable-Diffusion-architecture pipeline for mmalign's shapes world. It loads
exactly like SD1.5: `StableDiffusionPipeline.from_pretrained(path)`.

| component | class | parameters |
|---|---|---|
| unet | UNet2DConditionModel (32, 64, 64), attn at 8x8 + 4x4, text time embed | {count(unet):,} |
| vae | AutoencoderKL, blocks (16, 32), 32x32 RGB -> 16x16x4 | {count(vae):,} |
| text_encoder | CLIPTextModel, 2 layers, width 64 | {count(text_encoder):,} |
| tokenizer | CLIPTokenizer (byte-level BPE, {len(tokenizer)} tokens, one per toy word) | - |
| scheduler | DDIMScheduler, trailing spacing (trained as DDPM, linear betas, v-prediction) | - |

## Training (`mmalign toy build --only sd`, seed {s["seed"]})
- Data: {s["num_images"]} jittered flat renders of train-split prompts (held-out
  (shape, colour, background) combinations never seen).
- VAE: {s["vae_steps"]} AdamW steps, batch {s["vae_batch"]}, lr {s["vae_lr"]}, L1 + MSE
  reconstruction + {s["kl_weight"]} KL, on flat and outlined renders (so a tuned model can
  draw the outlined style the base never produces); latent scaling factor
  {vae.config.scaling_factor:.4f} (1 / std of the latents).
- UNet + text encoder: {s["unet_steps"]} AdamW steps, batch {s["unet_batch"]}, lr
  {s["unet_lr"]} (warmup {s["warmup"]}, cosine), {s["caption_dropout"]:.0%} empty captions for
  classifier-free guidance, offset noise {s["noise_offset"]}, {weighting}, latents encoded once
  and cached.
- Wall time on the 2-core build machine: {metrics["train_seconds"] / 60:.1f} min.

## Measured quality
- Mean `toy:fidelity` on {metrics["n"]} held-out prompts ({s["eval_steps"]} DDIM steps,
  guidance {s["guidance_scale"]}, seeds fixed): **{metrics["heldout_fidelity_mean"]:.3f}**
  (median {metrics["heldout_fidelity_median"]:.3f}); a random-init model scores near 0.
- Sampling: {metrics["seconds_per_image_batched"]:.3f} s per image (batched, CPU).
"""
    (out / "README.md").write_text(card)
