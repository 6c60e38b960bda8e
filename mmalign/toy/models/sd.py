"""`toy-sd`: a tiny Stable-Diffusion-architecture pipeline trained on the shapes world.

Same classes as SD1.5 (`UNet2DConditionModel`, `AutoencoderKL`, `CLIPTextModel`,
`CLIPTokenizer`; a DDPM-trained v-prediction UNet like SD2's 768 models), so
`StableDiffusionPipeline.from_pretrained(path)` loads it exactly as it loads SD1.5 and
every diffusion code path of mmalign runs on it.

The build has three resumable stages, each checkpointed in `work_dir`:
1. the VAE learns to reconstruct 32x32 renders (flat and outlined, so a tuned
   model can still draw a style the base never produces) -> 16x16x4 latents
   (a factor-2 VAE: at factor 4, 8x8 latents, the decoder blurs small shapes
   past recognition within any CPU budget we tried);
2. every training image is encoded once (cached latents, mean and std);
3. the UNet and the text encoder learn to denoise those latents from the
   caption, with 10% empty captions for classifier-free guidance.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..render import render_batch
from ..world import all_prompts, sample_prompts
from .checkpoint import (
    check_fingerprint,
    fingerprint_of,
    optimizer_tensors,
    restore_optimizer,
    save_tensors,
)
from .clip_tokenizer import save_clip_tokenizer
from .schedule import lr_factor

IMAGE_SIZE = 32
TEXT_MAX_LENGTH = 24  # the longest toy caption is 13 tokens with BOS/EOS


@dataclass
class ToySDSettings:
    seed: int = 0
    num_images: int = 16384
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 3600
    unet_batch: int = 32
    unet_lr: float = 1e-3
    # Per-timestep loss weight: "v" (plain v-prediction MSE), "v_capped" (plain v-MSE, capped
    # at low noise: min(1, snr_gamma / (snr + 1))) or "min_snr" (Hang et al. 2023, v form:
    # min(snr, snr_gamma) / (snr + 1)). See `loss_weights`.
    loss_weight: str = "v"
    snr_gamma: float = 5.0
    warmup: int = 100
    caption_dropout: float = 0.1
    noise_offset: float = 0.1
    checkpoint_every: int = 250
    eval_prompts: int = 200
    eval_steps: int = 20
    guidance_scale: float = 2.5

    def fingerprint(self, stage: str) -> str:
        """What a `stage` ("vae" or "unet") checkpoint must match to be resumed: every
        setting that changes that stage's result (the UNet's include the VAE's, which made
        its latents); evaluation and checkpoint spacing are left out."""
        d = asdict(self)
        for key in ("checkpoint_every", "eval_prompts", "eval_steps", "guidance_scale"):
            d.pop(key)
        if stage == "vae":
            d = {k: v for k, v in d.items() if k in ("seed", "num_images", *_VAE_FIELDS)}
        return fingerprint_of(d)


_VAE_FIELDS = ("vae_steps", "vae_batch", "vae_lr", "kl_weight")


def toy_words() -> list[str]:
    """Every word of the toy grammar (the tokenizer spells each as one token)."""
    return sorted({w for p in all_prompts() for w in p.text.split()})


def build_models(seed: int, tokenizer_dir: Path):
    """Random-init components with the toy-sd architecture (a scaled-down SD1.5)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TEXT_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        # No attention in the VAE's mid block: at 16x16 it cost a quarter of each VAE step.
        mid_block_add_attention=False,
    )
    # The posterior starts nearly deterministic (std ~ 0.007): with the default std of 1
    # the decoder first sees mostly noise and learns several times slower.
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -10.0
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        # Cross-attention at 8x8 and 4x4 only: attention over 16x16 tokens costs more than it
        # adds. The 4x4 level is what lets shapes form: without it, shape kind stayed near
        # chance in every budget we tried (GPU sweep: shape third 0.16-0.30 vs 0.69-0.77).
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
        # The attention-pooled caption is also added to the timestep embedding (diffusers'
        # `addition_embed_type="text"`), so every ResBlock sees the prompt, not only the
        # cross-attention layers; with the 4x4 level it lifted held-out fidelity 0.64 -> 0.85.
        addition_embed_type="text",
        encoder_hid_dim=64,
    )
    # DDPM's linear schedule, not SD1.5's scaled-linear: on 16x16 latents SD's schedule leaves
    # enough signal at t = T (alpha_bar 0.0047) that samples started from pure noise come out
    # with washed-out, mean-coloured backgrounds (measured: background third 0.25 at 1500 steps).
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        # v-prediction learned shapes faster than epsilon at the same budget (GPU sweep, both
        # with min-SNR-5 weights: held-out fidelity 0.88 vs 0.85 at 3000 steps of batch 64).
        prediction_type="v_prediction",
        clip_sample=False,
        steps_offset=1,
    )
    return tokenizer, text_encoder, vae, unet, scheduler


LOSS_WEIGHTS = ("v", "v_capped", "min_snr")


def loss_weights(snr: torch.Tensor, kind: str, gamma: float) -> torch.Tensor:
    """Weights of the per-image v-prediction MSE at signal-to-noise ratios `snr`.

    In x0 terms the v-MSE weighs a timestep by snr + 1; min-SNR-gamma (Hang et al. 2023,
    eq. 5, divided by snr + 1 for v-prediction) by min(snr, gamma), which at high noise
    (snr -> 0) is tiny. On toy-sd the shape word matters only at high noise (t >= 400: the
    loss gap between the right and a swapped shape word peaks at t = 500-700, where
    min-SNR-5 weighs a step 0.008-0.08), so min-SNR starves the very steps that teach
    shape. Measured on CPU, same VAE, data and seeds, 3600 steps, 200 held-out prompts:
    held-out fidelity 0.839 ("v"), 0.816 ("v_capped", gamma 5), 0.729 ("min_snr", gamma 5;
    it drew the prompted shape for 33% of prompts, mostly a circle-like blob).
    """
    if kind == "v":
        return torch.ones_like(snr)
    if kind == "v_capped":
        return (gamma / (snr + 1)).clamp(max=1.0)
    if kind == "min_snr":
        return snr.clamp(max=gamma) / (snr + 1)
    raise ValueError(f"unknown loss_weight '{kind}'; valid: {', '.join(LOSS_WEIGHTS)}")


def training_images(settings: ToySDSettings) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Jittered flat renders of train-split prompts (UNet data) and a style mix (VAE data)."""
    prompts = [p.text for p in sample_prompts(settings.num_images, "train", settings.seed)]
    flat = render_batch(prompts, IMAGE_SIZE, "flat", seed=settings.seed)
    # VAE data: two thirds flat, one third outlined.
    outlined = render_batch(prompts[::3], IMAGE_SIZE, "outlined", seed=settings.seed + 1)
    return prompts, flat, torch.cat([flat[1::3], flat[2::3], outlined])


def _load_checkpoint(path: Path, fingerprint: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """A stage's checkpoint to resume from, or None; one from other settings is refused
    (resuming it would silently mix two recipes)."""
    if not path.is_file():
        return None
    meta = check_fingerprint(
        path, fingerprint, "delete it or pass another work dir to start this stage over",
        model="toy-sd",
    )  # fmt: skip
    return load_file(str(path)), meta


def train_vae(
    vae, images: torch.Tensor, settings: ToySDSettings, work: Path, progress: bool,
    position: int = 0,
):  # fmt: skip
    ckpt = work / "vae.safetensors"
    opt = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    start = 0
    fingerprint = settings.fingerprint("vae")
    found = _load_checkpoint(ckpt, fingerprint)
    if found is not None:
        tensors, meta = found
        vae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("vae.")})
        restore_optimizer(opt, tensors, "opt.")
        start = meta["step"]
    gen = torch.Generator().manual_seed(settings.seed + 10)
    for _ in range(start):  # replay the data order so a resumed run sees the same batches
        torch.randint(len(images), (settings.vae_batch,), generator=gen)
    bar = tqdm(range(start, settings.vae_steps), desc="toy-sd vae", disable=not progress,
               position=position)  # fmt: skip
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = settings.vae_lr * lr_factor(step, settings.vae_steps, 50)
        x = images[torch.randint(len(images), (settings.vae_batch,), generator=gen)] * 2 - 1
        torch.manual_seed(settings.seed * 100003 + step)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        loss = rec + settings.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.vae_steps:
            tensors = {f"vae.{k}": v for k, v in vae.state_dict().items()}
            tensors.update(optimizer_tensors(opt, "opt."))
            save_tensors(ckpt, tensors, {"step": step + 1, "fingerprint": fingerprint})
    return vae


@torch.no_grad()
def encode_latents(
    vae, images: torch.Tensor, work: Path, progress: bool, position: int = 0,
    fingerprint: str = "",
):  # fmt: skip
    """Latent mean and std of every image, computed once and cached (per VAE fingerprint)."""
    cache = work / "latents.safetensors"
    if cache.is_file():
        with safe_open(str(cache), "pt") as f:
            cached_for = (f.metadata() or {}).get("fingerprint")
        if cached_for == fingerprint:
            data = load_file(str(cache))
            return data["mean"], data["std"]
    means, stds = [], []
    for i in tqdm(range(0, len(images), 256), desc="toy-sd encode", disable=not progress,
                  position=position):  # fmt: skip
        dist = vae.encode(images[i : i + 256] * 2 - 1).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(cache),
              metadata={"fingerprint": fingerprint})  # fmt: skip
    return mean, std


def train_unet(
    unet, text_encoder, tokenizer, scheduler, prompts, mean, std, scaling: float,
    settings: ToySDSettings, work: Path, progress: bool, stop_after: int | None = None,
    position: int = 0,
):  # fmt: skip
    """Denoising training of UNet + text encoder; `stop_after` simulates an interruption."""
    ckpt = work / "unet.safetensors"
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=settings.unet_lr, weight_decay=1e-2)
    start = 0
    fingerprint = settings.fingerprint("unet")
    found = _load_checkpoint(ckpt, fingerprint)
    if found is not None:
        tensors, meta = found
        unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")})
        text_encoder.load_state_dict(
            {k[5:]: v for k, v in tensors.items() if k.startswith("text.")}
        )
        restore_optimizer(opt, tensors, "opt.")
        start = meta["step"]
    ids = tokenizer(
        [*prompts, ""], padding="max_length", max_length=TEXT_MAX_LENGTH, return_tensors="pt"
    ).input_ids
    empty = ids[-1]
    ids = ids[:-1]
    alphas = scheduler.alphas_cumprod
    snr_all = alphas / (1 - alphas)
    end = settings.unet_steps if stop_after is None else min(stop_after, settings.unet_steps)
    bar = tqdm(range(start, end), desc="toy-sd unet", disable=not progress, position=position)
    for step in bar:
        # One generator per step: a resumed run draws exactly the batches it would have.
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        for group in opt.param_groups:
            group["lr"] = settings.unet_lr * lr_factor(step, settings.unet_steps, settings.warmup)
        idx = torch.randint(len(prompts), (settings.unet_batch,), generator=gen)
        eps_latent = torch.randn(mean[idx].shape, generator=gen)
        x0 = (mean[idx] + std[idx] * eps_latent) * scaling
        batch_ids = ids[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < settings.caption_dropout
        batch_ids[drop] = empty
        noise = torch.randn(x0.shape, generator=gen)
        # Offset noise (a shared per-channel shift) teaches the model to set global colour.
        noise = noise + settings.noise_offset * torch.randn(*x0.shape[:2], 1, 1, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        x_t = scheduler.add_noise(x0, noise, t)
        cond = text_encoder(batch_ids)[0]
        per_image = (unet(x_t, t, cond).sample - scheduler.get_velocity(x0, noise, t)).pow(2)
        weights = loss_weights(snr_all[t], settings.loss_weight, settings.snr_gamma)
        loss = (per_image.mean((1, 2, 3)) * weights).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 in (end, settings.unet_steps):
            tensors = {f"unet.{k}": v for k, v in unet.state_dict().items()}
            tensors.update({f"text.{k}": v for k, v in text_encoder.state_dict().items()})
            tensors.update(optimizer_tensors(opt, "opt."))
            save_tensors(ckpt, tensors, {"step": step + 1, "fingerprint": fingerprint})


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
    from ..rewards import fidelity

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
    pipe.save_pretrained(out)
    train_seconds = time.perf_counter() - start
    metrics = evaluate_toy_sd(out, settings.eval_prompts, steps=settings.eval_steps,
                              guidance=settings.guidance_scale)  # fmt: skip
    metrics.update(train_seconds=train_seconds, settings=asdict(settings))
    (out / "build_metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out, unet, vae, text_encoder, tokenizer, metrics)
    return metrics


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
