"""toy-flow's model card (README.md), written from the build's metrics and settings."""

from __future__ import annotations

from pathlib import Path


def _checks(metrics: dict) -> str:
    """The prompt-following check as pass rates (read as `mmalign.toy.rewards.prompt_checks`)."""
    rate = lambda k: "{:.3f} ({:.3f}-{:.3f})".format(  # noqa: E731
        metrics[f"heldout_{k}_pass"], *metrics[f"heldout_{k}_pass_ci95"]
    )
    return (
        f"- Prompt-following check on the same images (pass / fail, 95% bootstrap CI): hue\n"
        f"  {rate('hue')}, shape {rate('shape')}, background {rate('background')}.\n"
    )


def write_card(out: Path, pipe, metrics: dict) -> None:
    """The model card: how toy-flow was trained and what it measured."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    s = metrics["settings"]
    t, vae = pipe.transformer.config, pipe.vae.config
    rows = "\n".join(
        f"| {name} | {what} | {size} |"
        for name, what, size in (
            ("transformer", f"SD3Transformer2DModel (MMDiT), {t.num_layers} joint blocks, width "
             f"{t.num_attention_heads * t.attention_head_dim}, patch 2 (8x8 tokens), RMS qk-norm",
             f"{count(pipe.transformer):,}"),
            ("vae", f"AutoencoderKL (toy-sd's blocks, trained for toy-flow), 32x32 RGB -> "
             f"16x16x{vae.latent_channels}, SD3 latent shift "
             f"{vae.shift_factor:.4f} / scale {vae.scaling_factor:.4f}", f"{count(pipe.vae):,}"),
            ("text_encoder, text_encoder_2", "CLIPTextModelWithProjection, 2 layers, width 64 "
             "(started from toy-sd's)", f"{count(pipe.text_encoder):,} each"),
            ("text_encoder_3", "none (SD3 without T5; load with `text_encoder_3=None, "
             "tokenizer_3=None`, sample with `max_sequence_length=24`)", "-"),
            ("scheduler", "FlowMatchEulerDiscreteScheduler, shift "
             f"{pipe.scheduler.config.shift:g}", "-"),
        )
    )  # fmt: skip
    card = f"""# toy-flow

A tiny Stable-Diffusion-3-architecture pipeline for mmalign's shapes world, trained by
rectified flow. It loads as SD3 loads without its T5 encoder:
`StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)`.

| component | class | parameters |
|---|---|---|
{rows}

## Training (`mmalign toy build --only flow`, seed {s["seed"]})
- Data: {s["num_images"]} jittered flat renders of train-split prompts (held-out (shape,
  colour, background) combinations never seen).
- VAE: {s["vae_steps"]} AdamW steps, batch {s["vae_batch"]}, lr {s["vae_lr"]}, L1 + MSE
  reconstruction + {s["kl_weight"]:g} KL, on flat and outlined renders (so a tuned model can
  draw the outlined style the base never produces); the training latents encoded once by it.
- MMDiT + both CLIP encoders: {s["steps"]} AdamW steps, batch {s["batch"]}, lr {s["lr"]}
  (CLIP encoders {s["text_lr"]}; warmup {s["warmup"]}, cosine), rectified flow with SD3's
  logit-normal({s["logit_mean"]:g}, {s["logit_std"]:g}) noise levels and the velocity target
  eps - x0, {s["caption_dropout"]:.0%} empty captions for classifier-free guidance.
- Wall time on the 2-core build machine: {metrics["train_seconds"] / 60:.1f} min.

## Measured quality
- `toy:fidelity` on {metrics["n"]} held-out prompts ({s["eval_steps"]} Euler steps, guidance
  {s["guidance_scale"]:g}, seeds fixed): mean **{metrics["heldout_fidelity_mean"]:.3f}**
  (median {metrics["heldout_fidelity_median"]:.3f}); its thirds: shape colour
  {metrics["heldout_color_mean"]:.3f}, shape kind {metrics["heldout_shape_mean"]:.3f},
  background {metrics["heldout_background_mean"]:.3f}.
{_checks(metrics)}- Sampling: {metrics["seconds_per_image_batched"]:.3f} s per image (batched, CPU).
"""
    (out / "README.md").write_text(card)
