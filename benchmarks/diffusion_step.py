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

The steps live in benchmarks/diffusion_step_sides.py, the ratios and tables in
benchmarks/diffusion_step_ratios.py. Run `python benchmarks/diffusion_step.py --help` for the
options; `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from diffusion_step_ratios import compute_ratios, print_tables  # the acceptance ratios
from diffusion_step_sides import VARIANTS, naive_step, ours_step, pixel_batch  # the steps
from flow_step import FLOW_FAMILIES, flow_child, supports, time_steps  # the SD3 / FLUX rows

from mmalign.bench import rss_mb as _rss_mb
from mmalign.bench import step_summary
from mmalign.bench import sync as _sync

FAMILIES = ("sd", "sdxl", "toy", *FLOW_FAMILIES)  # toy: the shipped toy-sd; sd3, flux: flow
JSON_MARK = "BENCH_JSON "
QUICK = {"steps": 2, "warmup": 1, "batch": 2, "resolution": 32}
FULL = {"steps": 4, "warmup": 1, "batch": 8, "resolution": 64}


# ------------------------------------------------------------------------------ the child


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
        step, net = flow_child(args, variant, pixel_batch(args.batch, args.resolution), device)
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
    pixels = pixel_batch(args.batch, resolution)
    torch.manual_seed(0)  # the LoRA initialisation
    build = ours_step if variant.impl == "ours" else naive_step
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
    print_tables(results, ratios)
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
