"""The steps `benchmarks/diffusion_step.py` times: its variants, mmalign's step (`ours_step`,
as `mmalign train` runs a diffusion recipe) and the naive baseline (`naive_step`, written the
way the public Diffusion-DPO training scripts do it), with the random batch both take. The
variants are described in diffusion_step.py's docstring.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mmalign.bench import offload_encoders

if TYPE_CHECKING:
    import torch

Impl = Literal["ours", "naive"]
LossName = Literal["dpo", "mapo", "smpo"]
TrainKind = Literal["lora", "full", "ppd"]  # ppd: the user branch
PPD_WIDTH = 2048  # configs/toy/ppd.yaml: toy-vlm's contrast_tokens, 16 image tokens x 128
DPO_BETA = 2500.0  # Diffusion-DPO's SD1.5 value; it changes no timing, only the loss value


@dataclass(frozen=True)
class Variant:
    impl: Impl
    loss: LossName
    train: TrainKind
    cache: bool
    dense: bool = False

    @property
    def name(self) -> str:
        loss = f"dense-{self.loss}" if self.dense else self.loss
        return f"{self.impl}-{loss}-{self.train}-{'cache' if self.cache else 'encode'}"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        *(
            Variant("ours", loss, train, cache)
            for train in ("lora", "full")
            for loss in ("dpo", "mapo")
            for cache in (False, True)
        ),
        *(
            Variant("ours", "dpo", train, cache, dense=True)
            for train in ("lora", "full")
            for cache in (False, True)
        ),
        *(Variant("ours", "dpo", "ppd", cache) for cache in (False, True)),
        Variant("naive", "dpo", "lora", False),
        Variant("naive", "dpo", "full", False),
        *(
            Variant("ours", "smpo", train, cache)
            for train in ("lora", "full")
            for cache in (False, True)
        ),
    ]
}


def pixel_batch(batch: int, resolution: int) -> dict[str, Any]:
    """A collated `PairImages` batch of random pixels: the step's cost does not depend on the
    image content, and random pixels need no toy dataset to be rendered first."""
    import torch

    from mmalign.toy.world import sample_prompts

    g = torch.Generator().manual_seed(0)
    r = float(resolution)
    return {
        # The toy world's prompts fit the tiny pipelines' 24-token tokenizer untruncated.
        "prompt": [p.text for p in sample_prompts(batch, "train", 0)],
        "pixels": torch.rand((batch, 2, 3, resolution, resolution), generator=g) * 2 - 1,
        "time_ids": torch.tensor([r, r, 0.0, 0.0, r, r]).expand(batch, 2, 6).clone(),
        "label": torch.ones(batch),
    }


def dense_weights(pixels: dict[str, Any], latent_size: tuple[int, int]) -> Any:
    """`DenseWeights` of the batch's pairs from a freshly initialised toy dense head (seed 0),
    as `diffusion.dense` computes them once at the start of training (`pair_weights`)."""
    import tempfile

    import torch

    from mmalign.diffusion.dense import DenseWeights
    from mmalign.rewards.dense import DenseRewardConfig, DenseRewardModel, DenseScorer

    with tempfile.TemporaryDirectory() as tmp:
        state = torch.get_rng_state()
        torch.manual_seed(0)
        DenseRewardModel(DenseRewardConfig()).save_pretrained(tmp)
        torch.set_rng_state(state)  # the LoRA initialisation stays the one the others get
        scorer = DenseScorer(tmp, device="cpu")
    images = pixels["pixels"].add(1).div(2).clamp(0, 1)  # [B,2,3,R,R] in [0,1], as the recipe
    return DenseWeights.compute(
        scorer, images[:, 0], images[:, 1], list(pixels["prompt"]), latent_size
    )


def ours_step(
    model: Any, variant: Variant, pixels: dict[str, Any], rank: int, device: torch.device
) -> tuple[Callable[[int], float], torch.nn.Module, dict[str, Any]]:
    """mmalign's step, as `mmalign train` runs it for a diffusion recipe."""
    import torch

    from mmalign.diffusion import DiffusionPairScorer
    from mmalign.diffusion.encode import Encoder
    from mmalign.diffusion.lora import add_lora
    from mmalign.diffusion.trajectory import make_trajectory
    from mmalign.losses import Objective
    from mmalign.train import LoraConfig

    unet = model.unet
    if variant.train == "ppd":  # only the user branch trains (mmalign/diffusion/ppd_recipe.py)
        from mmalign.diffusion import ppd

        ppd.add_user_branch(unet, PPD_WIDTH, zero_values=True)
    elif variant.train == "lora":
        add_lora(unet, LoraConfig(rank=rank))
    else:
        unet.requires_grad_(True)
    spec = {
        "dpo": {"loss": "dpo", "beta": DPO_BETA},
        "mapo": {"loss": "mapo"},
        "smpo": {"loss": "smpo", "beta": DPO_BETA, "gamma": 10.0},
    }[variant.loss]
    objective = Objective.from_config([spec])
    reference = "copy" if variant.train == "full" else "adapters"  # ppd: the branch off
    encoder = Encoder(model)
    smpo = variant.loss == "smpo"
    # SmPO: the authors' ReNoise trajectory (family defaults: steps 5 / 10, 1 iteration; the
    # toy recipe uses 3 iterations).
    trajectory = (
        make_trajectory("renoise", None, model.pipe.scheduler.config, model.family)
        if smpo
        else None
    )
    if variant.train == "ppd":
        from mmalign.diffusion.ppd_recipe import PPDPairScorer as scorer_class
    else:
        scorer_class = DiffusionPairScorer
    scorer = scorer_class(
        model,
        encoder.empty(),
        reference=reference if objective.needs_reference else "none",
        use_labels=smpo,
        trajectory=trajectory,
    )
    if scorer.reference_unet is not None:
        scorer.reference_unet.to(device)
    batch = pixels
    cached: dict[str, torch.Tensor] | None = None
    if variant.cache:
        # The cache is written once before training; the recipe then keeps the encoders off
        # the accelerator, so they hold no device memory during the steps.
        rows = list(range(len(pixels["prompt"])))
        cached = {k: v.to(device) for k, v in encoder.encode(pixels, rows).items()}
        offload_encoders(model.pipe, device)
    extra: dict[str, Any] = {}
    dense = None
    if variant.dense:
        # Computed once before the steps, as the recipe does at the start of training.
        start = time.perf_counter()
        scale = model.vae_scale
        side = int(pixels["pixels"].shape[-1]) // scale
        dense = dense_weights(pixels, (side, side))
        extra["dense_setup_s"] = time.perf_counter() - start
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-5)
    b = len(pixels["prompt"])
    unet.train()
    if smpo:  # soft labels in SmPO's range [0.5, e/(1+e)]; their values change no timing
        batch = {**pixels, "label": torch.linspace(0.5, 0.73, b)}
        if cached is not None:
            cached["label"] = batch["label"].to(device)
    calls: list[int] = []
    rows: list[int] = []
    users = None  # PPD: one user embedding per pair, looked up by the recipe each step
    if variant.train == "ppd":
        gen = torch.Generator().manual_seed(0)
        users = torch.randn(b, PPD_WIDTH, generator=gen).to(device)

    def step(i: int) -> float:
        if cached is None:
            encoded = encoder.encode(batch, list(range(i * b, (i + 1) * b)))
            inputs = {k: v.to(device) for k, v in encoded.items()}
        else:
            inputs = cached
        if dense is not None:  # the recipe's lookup of the batch's rows (recipe.py)
            inputs = {**inputs, "dense_weight": dense.rows(range(b)).to(device)}
        if users is not None:
            inputs = {**inputs, "user_embeds": users}
        seeds = torch.arange(b) + i * b  # one seed per pair, as the loop derives them
        before = (trajectory.forwards, trajectory.rows) if trajectory is not None else (0, 0)
        scores = scorer(unet, inputs, seeds, with_reference=objective.needs_reference, base=unet)
        if trajectory is not None:  # the inversion's UNet calls of this step, no grad
            calls.append(trajectory.forwards - before[0])
            rows.append(trajectory.rows - before[1])
            extra["renoise_calls_per_step"] = sum(calls) / len(calls)
            # in units of one forward over the stacked [chosen; rejected] batch (2b latents)
            extra["renoise_forwards_per_step"] = sum(rows) / len(rows) / (2 * b)
        loss = objective(scores).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, unet, extra


def naive_step(
    model: Any, variant: Variant, pixels: dict[str, Any], rank: int, device: torch.device
) -> tuple[Callable[[int], float], torch.nn.Module, dict[str, Any]]:
    """The baseline: what the public Diffusion-DPO scripts do, with the same math."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from mmalign.diffusion.lora import add_lora
    from mmalign.train import LoraConfig

    pipe = model.pipe
    sdxl = model.family == "sdxl"
    unet = pipe.unet
    # A second full UNet as the reference, copied before any adapter is added.
    ref_unet = copy.deepcopy(unet).requires_grad_(False).eval()
    if variant.train == "lora":
        add_lora(unet, LoraConfig(rank=rank))
    else:
        unet.requires_grad_(True)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    num_t = int(scheduler.config.num_train_timesteps)
    vae = pipe.vae
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-5)
    b = len(pixels["prompt"])

    def encode_text(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = pipe.encode_prompt(
            prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return out[0], (out[2] if sdxl else None)

    with torch.no_grad():
        empty_embeds, empty_pooled = encode_text([""])
    unet.train()

    def step(i: int) -> float:
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            px = pixels["pixels"].to(device, vae.dtype)
            flat = torch.cat([px[:, 0], px[:, 1]])
            latents = vae.encode(flat).latent_dist.sample() * vae.config.scaling_factor
            embeds, pooled = encode_text(list(pixels["prompt"]))
        drop = (torch.rand(b, generator=gen) < 0.2).to(device)  # caption dropout, as ours
        embeds = torch.where(drop.view(-1, 1, 1), empty_embeds.expand_as(embeds), embeds)
        if pooled is not None and empty_pooled is not None:
            pooled = torch.where(drop.view(-1, 1), empty_pooled.expand_as(pooled), pooled)
        lat_c, lat_r = latents[:b], latents[b:]
        noise = torch.randn(lat_c.shape, generator=gen).to(device)
        t = torch.randint(0, num_t, (b,), generator=gen).to(device)
        time_ids = pixels["time_ids"].to(device)

        def mse(net: torch.nn.Module, x0: torch.Tensor, side: int) -> torch.Tensor:
            noisy = scheduler.add_noise(x0, noise, t)
            if model.prediction_type == "epsilon":
                target = noise
            else:
                target = scheduler.get_velocity(x0, noise, t)
            kwargs: dict[str, Any] = {}
            if sdxl:
                kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids[:, side]}
            pred = net(noisy, t, embeds, **kwargs).sample
            return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))

        mse_c, mse_r = mse(unet, lat_c, 0), mse(unet, lat_r, 1)
        with torch.no_grad():
            ref_c, ref_r = mse(ref_unet, lat_c, 0), mse(ref_unet, lat_r, 1)
        # Wallace et al. 2024, Eq. 14 as their script writes it.
        inside = -0.5 * DPO_BETA * ((mse_c - mse_r) - (ref_c - ref_r))
        loss = -F.logsigmoid(inside).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, unet, {}
