"""toy-flow's training: the settings, the shifted and scaled latents, and the resumable
rectified-flow stage (MMDiT + both CLIP encoders), checkpointed in the work dir."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..checkpoint import fingerprint_of, load_checkpoint, save_checkpoint, state_under
from ..schedule import lr_factor
from ..sd.model import TEXT_MAX_LENGTH
from ..sd.training import VAE_FIELDS, encode_latents, train_vae, training_images
from .model import encode_text


@dataclass
class ToyFlowSettings:
    seed: int = 0
    num_images: int = 16384
    # toy-flow's own VAE: toy-sd's (1500 steps) reads back the shape of only 86% of perfect
    # held-out renders (61% of the small ones), the ceiling toy-flow's shape check had reached
    # (0.845). 3000 steps read back 91.5% with 4 channels; 16 channels (SD3's) read back more
    # (95.5%) but the MMDiT learnt them slowly (shape check 0.745 in the same budget).
    vae_channels: int = 4
    vae_steps: int = 4500
    vae_batch: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    layers: int = 6
    width: int = 128
    steps: int = 6000
    batch: int = 32
    lr: float = 5e-4
    text_lr: float = 1e-4  # both CLIP encoders start trained (toy-sd's); the MMDiT does not
    warmup: int = 200
    # sigma ~ sigmoid(N(mean, std)): SD3's logit-normal(0, 1) (Esser et al. 2024, sec. 3.1)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    caption_dropout: float = 0.1
    checkpoint_every: int = 250
    eval_prompts: int = 200
    eval_steps: int = 20
    guidance_scale: float = 3.0

    def fingerprint(self, base: str = "") -> str:
        """What a transformer checkpoint must match to be resumed: every setting but
        evaluation and checkpoint spacing, and the toy-sd it started from (`base`, a key of
        its files)."""
        d = asdict(self)
        for key in ("checkpoint_every", "eval_prompts", "eval_steps", "guidance_scale"):
            d.pop(key)
        if base:
            d["base"] = base
        return fingerprint_of(d)

    def vae_fingerprint(self) -> str:
        """What the VAE stage's checkpoint and the cached latents must match."""
        keep = ("seed", "num_images", "vae_channels", *VAE_FIELDS)
        return fingerprint_of({"model": "toy-flow", **{k: getattr(self, k) for k in keep}})


def training_latents(vae, settings: ToyFlowSettings, work: Path, progress: bool,
                     position: int = 0):  # fmt: skip
    """Train toy-flow's VAE (resumable; on toy-sd's VAE data: two thirds flat renders, one
    third outlined, so a tuned model can draw the outlined style), then the prompts and the
    latent mean / std of their jittered flat renders (cached), with SD3's latent
    `shift_factor` (the mean) and `scaling_factor` (1 / std after the shift)."""
    prompts, flat, vae_images = training_images(settings)
    key = settings.vae_fingerprint()
    train_vae(vae, vae_images, settings, work, progress, position, "toy-flow", key)
    vae.eval()
    mean, std = encode_latents(vae, flat, work, progress, position, key, "toy-flow")
    shift = float(mean.mean())
    scale = float(1 / (mean - shift).std())
    return prompts, mean, std, shift, scale


def sample_sigmas(n: int, settings: ToyFlowSettings, gen: torch.Generator) -> torch.Tensor:
    """Noise levels in (0, 1) from SD3's logit-normal density."""
    return torch.sigmoid(settings.logit_mean + settings.logit_std * torch.randn(n, generator=gen))


def train_transformer(
    transformer, text_encoder, text_encoder_2, tokenizer, prompts, mean, std, shift: float,
    scale: float, settings: ToyFlowSettings, work: Path, progress: bool,
    stop_after: int | None = None, position: int = 0, base: str = "",
):  # fmt: skip
    """Rectified-flow training: x_t = (1 - sigma) x0 + sigma eps, the MMDiT predicts the
    velocity eps - x0 (Esser et al. 2024, eq. 1-3 with the flow-matching loss, unweighted).
    `stop_after` simulates an interruption; `base` keys the toy-sd the run started from."""
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "transformer.safetensors"
    text_params = list(text_encoder.parameters()) + list(text_encoder_2.parameters())
    groups = [
        {"params": list(transformer.parameters()), "base_lr": settings.lr},
        {"params": text_params, "base_lr": settings.text_lr},
    ]
    opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=1e-2)
    fingerprint = settings.fingerprint(base)
    modules = {"transformer": transformer, "text": text_encoder, "text_2": text_encoder_2}
    found = load_checkpoint(
        ckpt, fingerprint, opt, "delete it or pass another work dir to start over",
        model="toy-flow",
    )  # fmt: skip
    start = 0
    if found is not None:
        tensors, meta = found
        for prefix, module in modules.items():
            module.load_state_dict(state_under(tensors, prefix))
        start = meta["step"]
    ids = tokenizer(
        [*prompts, ""], padding="max_length", max_length=TEXT_MAX_LENGTH, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    empty, ids = ids[-1], ids[:-1]
    params = [p for g in groups for p in g["params"]]
    end = settings.steps if stop_after is None else min(stop_after, settings.steps)
    bar = tqdm(range(start, end), desc="toy-flow mmdit", disable=not progress,
               position=position)  # fmt: skip
    for step in bar:
        # One generator per step: a resumed run draws exactly the batches it would have.
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        factor = lr_factor(step, settings.steps, settings.warmup)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        idx = torch.randint(len(prompts), (settings.batch,), generator=gen)
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        x0 = (z - shift) * scale
        batch_ids = ids[idx].clone()
        batch_ids[torch.rand(len(idx), generator=gen) < settings.caption_dropout] = empty
        eps = torch.randn(x0.shape, generator=gen)
        sigma = sample_sigmas(len(idx), settings, gen)
        s = sigma[:, None, None, None]
        x_t = (1 - s) * x0 + s * eps
        embeds, pooled = encode_text(text_encoder, text_encoder_2, batch_ids, TEXT_MAX_LENGTH)
        v = transformer(
            hidden_states=x_t, timestep=sigma * 1000, encoder_hidden_states=embeds,
            pooled_projections=pooled,
        ).sample  # fmt: skip
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 in (end, settings.steps):
            states = {k: m.state_dict() for k, m in modules.items()}
            save_checkpoint(ckpt, states, opt, {"step": step + 1, "fingerprint": fingerprint})
