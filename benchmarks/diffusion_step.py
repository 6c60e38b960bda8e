"""Seconds per training step and peak memory of mmalign's diffusion preference step.

What is measured: one full optimisation step (encode if needed, score the pairs, loss,
backward, AdamW step) on the random tiny SD1.5 / SDXL pipelines of `mmalign.diffusion.load`,
for these variants (each in both families):

    ours-{dpo,mapo}-{lora,full}-{encode,cache}   mmalign's `DiffusionPairScorer` + `Objective`
    ours-dense-dpo-{lora,full}-{encode,cache}    the same Diffusion-DPO step with ImageDoctor's
                                                 dense weighting (`diffusion.dense`)
    ours-smpo-{lora,full}-{encode,cache}         SmPO-Diffusion: soft labels and the ReNoise-
                                                 inverted trajectory (`diffusion.trajectory`)
    ours-dpo-ppd-{encode,cache}                  PPD: Diffusion-DPO training only the
                                                 IP-Adapter user branch, each pair conditioned
                                                 on a user embedding (width 2048, toy-vlm's
                                                 contrast_tokens), reference = the branch off
    naive-dpo-{lora,full}-encode                 a baseline written the way the public
                                                 Diffusion-DPO training scripts do it

Families `sd3` and `flux` are the flow-matching rows (tiny random SD3 / FLUX pipelines; the
`dpo` and `mapo` variants, and as `naive` a flow DPO with a second LoRA adapter as the
reference and chosen and rejected in separate forwards, as flow_grpo's script):
benchmarks/flow_step.py.

`ours`: chosen and rejected go through the UNet in one forward over [chosen; rejected]; the
Diffusion-DPO reference is the same UNet with its adapters disabled (LoRA) or one frozen copy
(full fine-tune), and MaPO, being reference-free, runs no reference at all. `encode` runs the
VAE and the text encoders on the pixels every step (`Encoder.encode`); `cache` encodes the
batch once before timing and reuses the tensors, as training from the pre-encoding cache does.

`naive`: the encoders run every step, chosen and rejected take separate UNet forwards, and the
reference is a second full UNet (a deepcopy of the base) run separately on chosen and rejected,
for both LoRA and the full fine-tune.

`ours-dense-dpo`: the per-image weights 1 - H (`mmalign.diffusion.dense.DenseWeights`) are
computed once before timing by a dense reward head, as the recipe computes them once at the
start of training, and each step looks up its rows and weights the squared error. The head is
the toy backbone of `configs/toy/dense_reward.yaml`, freshly initialised from seed 0 (the
benchmark does not depend on a trained head under runs/; the weights' values change no
timing). The time to compute the weights is reported (`dense_setup_s`), outside the steps.

`ours-smpo` (Lu et al. ICML 2025): the `smpo` loss (gamma 10) on soft labels, with each pair's
latents inverted by DDIM + one ReNoise iteration under the policy before the scored forward
(`mmalign.diffusion.trajectory`, the recipe's defaults: 5 inversion steps for SD1.5 and toy-sd,
10 for SDXL). The inversion's UNet calls are counted per step (`renoise_calls_per_step`) and in
units of one forward over the stacked [chosen; rejected] batch (`renoise_forwards_per_step`;
a call may run on only the rows still climbing to their level), against Diffusion-DPO's two
(policy and reference). Family `toy` is the shipped toy-sd (v-prediction, 32 px, its own
resolution whatever --resolution says), e.g. `--families toy,sdxl --variants
ours-dpo-lora-cache,ours-smpo-lora-cache`.

Every variant runs in its own child process (this file with `--variant NAME --json`), so its
peak memory is its own: the child's peak RSS (`ru_maxrss`) on CPU, and
`torch.cuda.max_memory_allocated()` on CUDA. The time is the median of the timed steps after
the warm-up steps. The parent prints one table of the variants and one of the ratios the
project's acceptance asks for, each computed from this run's own numbers and marked PASS or
MISS against its target:

    MaPO time / DPO time           <= 0.75
    MaPO peak / DPO peak           <  1
    dense-DPO time / DPO time      <= 1.1
    SmPO time, peak / DPO's        (no target; the extra UNet forwards printed beside them)
    cache speed-up (encode / cache time) >= 1.3
    ours time / naive time         <= 0.7

Run `python benchmarks/diffusion_step.py --help` for the options; `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flow_step import FLOW_FAMILIES, flow_child, supports, time_steps  # the SD3 / FLUX rows

from mmalign.bench import rss_mb as _rss_mb
from mmalign.bench import step_summary
from mmalign.bench import sync as _sync

if TYPE_CHECKING:
    import torch

Impl = Literal["ours", "naive"]
LossName = Literal["dpo", "mapo", "smpo"]
TrainKind = Literal["lora", "full", "ppd"]  # ppd: the user branch
FAMILIES = ("sd", "sdxl", "toy", *FLOW_FAMILIES)  # toy: the shipped toy-sd; sd3, flux: flow
PPD_WIDTH = 2048  # configs/toy/ppd.yaml: toy-vlm's contrast_tokens, 16 image tokens x 128
DPO_BETA = 2500.0  # Diffusion-DPO's SD1.5 value; it changes no timing, only the loss value
JSON_MARK = "BENCH_JSON "
QUICK = {"steps": 2, "warmup": 1, "batch": 2, "resolution": 32}
FULL = {"steps": 4, "warmup": 1, "batch": 8, "resolution": 64}


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


# ------------------------------------------------------------------------------ the child


def _pixel_batch(batch: int, resolution: int) -> dict[str, Any]:
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


def _dense_weights(pixels: dict[str, Any], latent_size: tuple[int, int]) -> Any:
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


def _ours(
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
        for name in ("vae", "text_encoder", "text_encoder_2"):
            module = getattr(model.pipe, name, None)
            if module is not None:
                module.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    extra: dict[str, Any] = {}
    dense = None
    if variant.dense:
        # Computed once before the steps, as the recipe does at the start of training.
        start = time.perf_counter()
        scale = model.vae_scale
        side = int(pixels["pixels"].shape[-1]) // scale
        dense = _dense_weights(pixels, (side, side))
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


def _naive(
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


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Build one variant, time its steps and report its peak memory."""
    # Everything is imported before the baseline RSS is read, so `train_rss_mb` counts the
    # run (models, optimizer state, activations), not the libraries.
    import peft  # noqa: F401
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: F401

    from mmalign.diffusion import (
        DiffusionModel,
        load_pipeline,
        tiny_sd_pipeline,
        tiny_sdxl_pipeline,
    )

    torch.set_num_threads(args.threads)
    variant = VARIANTS[args.variant]
    device = torch.device(_device_name(args.device))
    base_rss = _rss_mb()
    if args.family in FLOW_FAMILIES:  # SD3 / FLUX: benchmarks/flow_step.py builds the step
        step, net = flow_child(args, variant, _pixel_batch(args.batch, args.resolution), device)
        times, loss = time_steps(step, args.warmup, args.steps, device, _sync)
        return {
            "variant": variant.name, "family": args.family, "device": str(device),
            "threads": args.threads, "batch": args.batch, "resolution": args.resolution,
            "warmup": args.warmup, "steps": args.steps,
            **step_summary(times, device, base_rss),
            "trainable_params": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "final_loss": loss,
        }  # fmt: skip
    resolution = args.resolution
    if args.family == "toy":  # the shipped toy-sd (SD1.5 layout), at the size it was trained
        model = load_pipeline("toy:sd")
        pipe = model.pipe
        resolution = model.default_resolution
    else:
        make = tiny_sdxl_pipeline if args.family == "sdxl" else tiny_sd_pipeline
        pipe = make(seed=0, prediction_type="epsilon")
        model = DiffusionModel(pipe, args.family, f"tiny-{args.family}")
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    pixels = _pixel_batch(args.batch, resolution)
    torch.manual_seed(0)  # the LoRA initialisation
    build = _ours if variant.impl == "ours" else _naive
    step, unet, extra = build(model, variant, pixels, args.rank, device)
    times: list[float] = []
    loss = float("nan")
    for i in range(args.warmup + args.steps):
        _sync(device)
        start = time.perf_counter()
        loss = step(i)  # float() of the loss already waits for the device
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return {
        "variant": variant.name,
        "family": args.family,
        "device": str(device),
        "threads": args.threads,
        "batch": args.batch,
        "resolution": resolution,
        "warmup": args.warmup,
        "steps": args.steps,
        **step_summary(times, device, base_rss),
        "trainable_params": sum(p.numel() for p in unet.parameters() if p.requires_grad),
        "final_loss": loss,
        **extra,
    }


def _device_name(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


# ----------------------------------------------------------------------------- the parent


@dataclass(frozen=True)
class Ratio:
    """`metric(numerator) / metric(denominator)`; `{t}` in a name stands for lora or full."""

    name: str
    numerator: str
    denominator: str
    metric: Literal["s_per_step", "peak_mb", "train_rss_mb"]
    target: float | None
    op: Literal["<=", "<", ">="] = "<="


RATIOS = [
    Ratio("MaPO/DPO time (cache)", "ours-mapo-{t}-cache", "ours-dpo-{t}-cache", "s_per_step", 0.75),
    Ratio(
        "MaPO/DPO time (encode)", "ours-mapo-{t}-encode", "ours-dpo-{t}-encode", "s_per_step", 0.75
    ),
    Ratio("MaPO/DPO peak (cache)", "ours-mapo-{t}-cache", "ours-dpo-{t}-cache", "peak_mb", 1, "<"),
    Ratio(
        "MaPO/DPO peak (encode)", "ours-mapo-{t}-encode", "ours-dpo-{t}-encode", "peak_mb", 1, "<"
    ),
    # On CPU the peak RSS is mostly the libraries (the same in every child), which pulls every
    # peak ratio towards 1; the same ratio over the RSS the run added shows the difference.
    Ratio(
        "MaPO/DPO +run MB (cache)",
        "ours-mapo-{t}-cache",
        "ours-dpo-{t}-cache",
        "train_rss_mb",
        1,
        "<",
    ),
    Ratio(
        "MaPO/DPO +run MB (encode)",
        "ours-mapo-{t}-encode",
        "ours-dpo-{t}-encode",
        "train_rss_mb",
        1,
        "<",
    ),
    # ImageDoctor's dense weighting: the heatmaps are computed once, so a step only looks up
    # its rows' weights and multiplies the squared error.
    Ratio(
        "dense-DPO/DPO time (cache)",
        "ours-dense-dpo-{t}-cache",
        "ours-dpo-{t}-cache",
        "s_per_step",
        1.1,
    ),
    Ratio(
        "dense-DPO/DPO time (encode)",
        "ours-dense-dpo-{t}-encode",
        "ours-dpo-{t}-encode",
        "s_per_step",
        1.1,
    ),
    # SmPO-Diffusion: the ReNoise inversion adds no-grad UNet forwards before the scored one
    # (their count is printed beside these rows); no target.
    Ratio("SmPO/DPO time (cache)", "ours-smpo-{t}-cache", "ours-dpo-{t}-cache", "s_per_step", None),
    Ratio(
        "SmPO/DPO time (encode)", "ours-smpo-{t}-encode", "ours-dpo-{t}-encode", "s_per_step", None
    ),
    Ratio("SmPO/DPO peak (cache)", "ours-smpo-{t}-cache", "ours-dpo-{t}-cache", "peak_mb", None),
    Ratio(
        "SmPO/DPO +run MB (cache)",
        "ours-smpo-{t}-cache",
        "ours-dpo-{t}-cache",
        "train_rss_mb",
        None,
    ),
    # PPD: the user branch adds 4 user tokens to every cross-attention (issue 22: <= 1.2x).
    Ratio("PPD/DPO time (cache)", "ours-dpo-ppd-cache", "ours-dpo-{t}-cache", "s_per_step", 1.2),
    Ratio("PPD/DPO time (encode)", "ours-dpo-ppd-encode", "ours-dpo-{t}-encode", "s_per_step", 1.2),
    Ratio("PPD/DPO peak (cache)", "ours-dpo-ppd-cache", "ours-dpo-{t}-cache", "peak_mb", None),
    Ratio(
        "cache speed-up DPO", "ours-dpo-{t}-encode", "ours-dpo-{t}-cache", "s_per_step", 1.3, ">="
    ),
    Ratio(
        "cache speed-up MaPO",
        "ours-mapo-{t}-encode",
        "ours-mapo-{t}-cache",
        "s_per_step",
        1.3,
        ">=",
    ),
    # Like for like: both run the encoders every step.
    Ratio(
        "ours/naive time (encode)", "ours-dpo-{t}-encode", "naive-dpo-{t}-encode", "s_per_step", 0.7
    ),
    # What a user of the pre-encoding cache gets against the baseline.
    Ratio(
        "ours/naive time (ours cache)",
        "ours-dpo-{t}-cache",
        "naive-dpo-{t}-encode",
        "s_per_step",
        0.7,
    ),
    Ratio(
        "ours/naive peak (encode)", "ours-dpo-{t}-encode", "naive-dpo-{t}-encode", "peak_mb", None
    ),
]


def _verdict(value: float, target: float | None, op: str) -> str:
    if target is None:
        return "-"
    ok = {"<=": value <= target, "<": value < target, ">=": value >= target}[op]
    return "PASS" if ok else "MISS"


def compute_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every ratio whose two variants ran (and succeeded) in this run."""
    rows = []
    for family, by_variant in results.items():
        for train in ("lora", "full"):
            for r in RATIOS:
                num = by_variant.get(r.numerator.format(t=train), {})
                den = by_variant.get(r.denominator.format(t=train), {})
                if r.metric not in num or r.metric not in den:
                    continue
                value = num[r.metric] / den[r.metric]
                note = ""
                if "renoise_forwards_per_step" in num:
                    note = (
                        f"+{num['renoise_forwards_per_step']:.2f} UNet forwards/step "
                        f"({num['renoise_calls_per_step']:.1f} calls; DPO: 2)"
                    )
                rows.append({
                    "family": family,
                    "train": train,
                    "name": r.name,
                    "numerator": r.numerator.format(t=train),
                    "denominator": r.denominator.format(t=train),
                    "metric": r.metric,
                    "value": value,
                    "target": r.target,
                    "op": r.op,
                    "verdict": _verdict(value, r.target, r.op),
                    "note": note,
                })  # fmt: skip
    return rows


def _run_variant(args: argparse.Namespace, family: str, name: str) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--json",
        "--variant", name, "--family", family,
        "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--batch", str(args.batch), "--resolution", str(args.resolution),
        "--rank", str(args.rank), "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    # Every thread-pool knob follows --threads, so children never oversubscribe the machine.
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return dict(json.loads(line[len(JSON_MARK) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {
        "variant": name,
        "family": family,
        "error": "\n".join(tail),
        "returncode": proc.returncode,
    }


def _print_tables(
    results: dict[str, dict[str, dict[str, Any]]], ratios: list[dict[str, Any]]
) -> None:
    device = next((r["device"] for v in results.values() for r in v.values() if "device" in r), "?")
    peak = "peak MB (cuda alloc)" if device.startswith("cuda") else "peak MB (RSS)"
    print(f"\n{'family':<6} {'variant':<26} {'s/step':>9} {'min s':>9} {peak:>20} {'+run MB':>8}")
    for family, by_variant in results.items():
        for name, r in by_variant.items():
            if "error" in r:
                print(f"{family:<6} {name:<26} FAILED: {r['error'].splitlines()[-1:]}")
                continue
            print(
                f"{family:<6} {name:<26} {r['s_per_step']:>9.4f} {r['s_per_step_min']:>9.4f} "
                f"{r['peak_mb']:>20.1f} {r['train_rss_mb']:>8.1f}"
            )
    print(f"\n{'family':<6} {'train':<5} {'ratio':<29} {'value':>7} {'target':>8}  verdict")
    for row in ratios:
        target = "-" if row["target"] is None else f"{row['op']} {row['target']:g}"
        print(
            f"{row['family']:<6} {row['train']:<5} {row['name']:<29} {row['value']:>7.3f} "
            f"{target:>8}  {row['verdict']}  {row.get('note', '')}".rstrip()
        )


def run_parent(args: argparse.Namespace) -> int:
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in families:
        if family not in FAMILIES:
            raise SystemExit(f"--families: unknown family {family!r} (use {', '.join(FAMILIES)})")
    names = list(VARIANTS) if args.variants is None else args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    start = time.perf_counter()
    for family in families:
        results[family] = {}
        for name in names:
            ppd_row = VARIANTS[name].train == "ppd"  # the UNet's IP-Adapter branch
            if family in FLOW_FAMILIES and (ppd_row or not supports(VARIANTS[name])):
                continue  # flow rows: DPO and MaPO (no dense weighting, no SmPO trajectory)
            r = _run_variant(args, family, name)
            results[family][name] = r
            done = "FAILED" if "error" in r else f"{r['s_per_step']:.4f} s/step"
            print(f"[{time.perf_counter() - start:6.1f}s] {family} {name}: {done}", flush=True)
    ratios = compute_ratios(results)
    _print_tables(results, ratios)
    report = {
        "benchmark": "diffusion_step",
        "config": {
            "families": families, "variants": names, "steps": args.steps,
            "warmup": args.warmup, "batch": args.batch, "resolution": args.resolution,
            "rank": args.rank, "device": args.device, "threads": args.threads,
            "quick": args.quick, "python": sys.version.split()[0],
        },
        "results": results,
        "ratios": ratios,
    }  # fmt: skip
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {out}")
    failed = any("error" in r for v in results.values() for r in v.values())
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time mmalign's diffusion preference step against a naive baseline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--families", default="sd,sdxl", help="comma list of " + ", ".join(FAMILIES))
    p.add_argument(
        "--variants", default=None, help=f"comma list (default all): {', '.join(VARIANTS)}"
    )
    # Sizes default to the full run's, or the quick run's with --quick.
    for name, what in (("steps", "timed steps"), ("warmup", "untimed steps first"),
                       ("batch", "pairs per step"), ("resolution", "pixels")):  # fmt: skip
        help_text = f"{what} ({FULL[name]}; quick {QUICK[name]})"
        p.add_argument(f"--{name}", type=int, default=None, help=help_text)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda if available"
    )
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch / OpenMP threads of each child (default: $OMP_NUM_THREADS, else 1)",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run: few small steps")
    p.add_argument("--out", default=None, help="write the results and ratios as JSON here")
    # The child side: one variant, its result as one JSON line.
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--family", default="sd", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="child mode: run --variant, print JSON")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json:
        if args.variant not in VARIANTS:
            raise SystemExit(f"--json needs --variant, one of {', '.join(VARIANTS)}")
        print(JSON_MARK + json.dumps(run_child(args)), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
