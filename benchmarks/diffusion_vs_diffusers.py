"""mmalign's diffusion step against diffusers' own Diffusion-DPO training script, like for like.

The peer is `examples/research_projects/diffusion_dpo/train_diffusion_dpo.py` from diffusers
(Wallace et al. 2024, "Diffusion Model Alignment Using Direct Preference Optimization"). It is
not part of mmalign and is not shipped: get a copy and pass its path with `--peer-script`,

    git clone --depth 1 https://github.com/huggingface/diffusers /tmp/diffusers
    python benchmarks/diffusion_vs_diffusers.py \
        --peer-script /tmp/diffusers/examples/research_projects/diffusion_dpo/train_diffusion_dpo.py

The script imports `wandb` at the top but uses it only for validation images; when `wandb` is
not installed the peer child puts an empty stand-in module in `sys.modules` before running the
script, so the user's copy needs no patch (the file itself is never modified).

What runs, on the same inputs built here in a temporary folder: a tiny SD1.5-layout pipeline
(`tiny_sd_pipeline`, UNet about 0.8 M parameters; `--model wide` on CUDA), saved with
`save_pretrained`, and `--pairs` Pick-a-Pic-format pairs (caption, jpg_0, jpg_1, label_0,
label_1 parquet, written by `write_pickapic`). Both sides: LoRA rank `--rank` (alpha = rank) on
to_q/to_k/to_v/to_out.0, sigmoid Diffusion-DPO, AdamW (lr 1e-5, weight decay 1e-2), clipping at
1.0, constant schedule, batch `--batch` pairs, no validation, tensorboard logging (each side's
default), resize bilinear + centre crop + random horizontal flip (the script's data; mmalign
with `diffusion.resize_filter: bilinear`, `diffusion.random_flip: true` where the installed
mmalign has those settings) and no caption dropout (the script has none). Sides:

    peer                 the script, run as `__main__` with its own argument parser
    mmalign              `mmalign train` (train() + DiffusionRecipe): encoders every step
    mmalign-precompute   the same with `diffusion.precompute: true` (cache built before step 1)
    mmalign-compile, mmalign-precompute-compile
                         the two above with `diffusion.compile: true` (torch.compile; the
                         compilation falls in the untimed warm-up steps, and its memory in the
                         peak); not run unless named in `--sides`

Timing: a global optimizer step post-hook (`torch.optim.optimizer.
register_optimizer_step_post_hook`) stamps wall and process CPU time after every optimizer
step of either side; a step's time is the gap between two stamps, so it covers reading and
decoding the batch, the encoders, both UNet forwards, backward, clipping, the AdamW step and
whatever the loop does between steps (logging). The first `--warmup` steps are not timed. Each
side runs in its own child process (peak memory is its own: peak RSS on CPU,
`torch.cuda.max_memory_allocated` on CUDA), `--rounds` times, the sides rotating their order
every round so machine load falls on all of them alike; the reported figure is the median over
rounds of each round's median, and every ratio is against the peer measured in the same run.

`--device cuda` runs at 512 px on a tiny-but-wide UNet with bf16 autocast on both sides
(`--mixed_precision bf16` / `train.mixed_precision: bf16`) and diffusers' default SDPA
attention; without CUDA it exits with status 2 before building anything.

The inputs and the child (each side's training run, the step clock) live in
benchmarks/diffusion_vs_diffusers_sides.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from diffusion_vs_diffusers_sides import build_inputs, run_child

JSON_MARK = "BENCH_JSON "
SIDES = ("peer", "mmalign", "mmalign-precompute", "mmalign-compile", "mmalign-precompute-compile")
DEFAULT_SIDES = SIDES[:3]
TARGETS = {"mmalign": 0.95, "mmalign-precompute": 0.70,  # time / peer time, issue 19
           "mmalign-compile": 0.95, "mmalign-precompute-compile": 0.70}  # fmt: skip


# ----------------------------------------------------------------------------- the parent


def _run_side(args: argparse.Namespace, side: str, resolution: int, inputs: dict[str, Any],
              profile: str | None) -> dict[str, Any]:  # fmt: skip
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", side,
        "--resolution", str(resolution), "--inputs", json.dumps(inputs),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
        "--rank", str(args.rank), "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    if args.peer_script:
        cmd += ["--peer-script", args.peer_script]
    if profile:
        cmd += ["--profile", profile]
    threads = str(args.threads)  # every thread pool follows --threads: no oversubscription
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    if args.device != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return dict(json.loads(line[len(JSON_MARK) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
    return {"side": side, "resolution": resolution, "error": "\n".join(tail)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per resolution and side: medians over rounds, and ratios against the peer."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted({run["resolution"] for run in runs}):
        by_side: dict[str, Any] = {}
        for side in SIDES:
            ok = [x for x in runs if (x["resolution"], x["side"]) == (r, side) and "error" not in x]
            if not ok:
                continue
            by_side[side] = {
                key: statistics.median(x[key] for x in ok)
                for key in ("s_per_step", "cpu_s_per_step", "peak_mb")
            }
            by_side[side]["rounds"] = len(ok)
        peer = by_side.get("peer")
        for side, row in by_side.items():
            if peer is None:
                break
            for key in ("s_per_step", "cpu_s_per_step", "peak_mb"):
                row[f"{key}_vs_peer"] = row[key] / peer[key]
            target = TARGETS.get(side)
            if target is not None:
                row["target"] = target
                met = row["s_per_step_vs_peer"] <= target and row["peak_mb_vs_peer"] <= 1.0
                row["verdict"] = "PASS" if met else "MISS"
        out[str(r)] = by_side
    return out


def _print(summary: dict[str, dict[str, Any]], device: str) -> None:
    mem = "peak MB (cuda)" if device == "cuda" else "peak MB (RSS)"
    print(f"\n{'px':>4} {'side':<26} {'s/step':>8} {'ratio':>6} {'cpu s':>8} {'ratio':>6} "
          f"{mem:>15} {'ratio':>6}  target")  # fmt: skip
    for r, by_side in summary.items():
        for side, row in by_side.items():
            ratio = [f"{row.get(f'{k}_vs_peer', float('nan')):>6.3f}"
                     for k in ("s_per_step", "cpu_s_per_step", "peak_mb")]  # fmt: skip
            verdict = f"<= {row['target']:.2f} {row['verdict']}" if "verdict" in row else "-"
            print(f"{r:>4} {side:<26} {row['s_per_step']:>8.4f} {ratio[0]} "
                  f"{row['cpu_s_per_step']:>8.4f} {ratio[1]} {row['peak_mb']:>15.1f} {ratio[2]}"
                  f"  {verdict}")  # fmt: skip


def run_parent(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device here (torch.cuda.is_available() is False); "
                  "run it on a GPU machine, or use --device cpu", file=sys.stderr)  # fmt: skip
            return 2
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad:
        raise SystemExit(f"--sides: unknown {', '.join(bad)}; use {', '.join(SIDES)}")
    if "peer" in sides and not (args.peer_script and Path(args.peer_script).is_file()):
        raise SystemExit(
            "--peer-script PATH: a copy of diffusers' examples/research_projects/diffusion_dpo/"
            "train_diffusion_dpo.py is needed (git clone https://github.com/huggingface/"
            "diffusers); or leave peer out of --sides"
        )
    resolutions = [int(x) for x in args.resolutions.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dpo-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(work, args.model, args.pairs, resolutions)
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for k in range(args.rounds):
        order = sides[k % len(sides) :] + sides[: k % len(sides)]  # rotate who goes first
        for r in resolutions:
            for side in order:
                profile = None
                if args.profile_dir and k == 0:
                    Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
                    profile = str(Path(args.profile_dir) / f"{side}-{r}.prof")
                run = _run_side(args, side, r, inputs, profile)
                run["round"] = k
                runs.append(run)
                done = "FAILED" if "error" in run else f"{run['s_per_step']:.4f} s/step"
                print(f"[{time.perf_counter() - start:6.0f}s] round {k + 1} {r}px {side}: {done}",
                      flush=True)  # fmt: skip
                if "error" in run:
                    print(run["error"], file=sys.stderr)
    summary = summarise(runs)
    _print(summary, args.device)
    report = {
        "benchmark": "diffusion_vs_diffusers",
        "config": {k: getattr(args, k) for k in (
            "sides", "resolutions", "rounds", "steps", "warmup", "batch", "pairs", "rank",
            "device", "model", "threads", "peer_script")},
        "loadavg": os.getloadavg(),
        "summary": summary,
        "runs": runs,
    }  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 1 if any("error" in run for run in runs) else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time mmalign's diffusion step against diffusers' train_diffusion_dpo.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--peer-script", default=None,
                   help="a copy of diffusers' examples/research_projects/diffusion_dpo/"
                        "train_diffusion_dpo.py (not shipped with mmalign)")  # fmt: skip
    p.add_argument("--sides", default=",".join(DEFAULT_SIDES),
                   help="comma list of " + ", ".join(SIDES))  # fmt: skip
    p.add_argument("--resolutions", default=None, help="comma list of pixels (cpu 32,64; cuda 512)")
    p.add_argument("--rounds", type=int, default=3, help="child runs per side, order rotating")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--batch", type=int, default=8, help="pairs per step")
    p.add_argument("--pairs", type=int, default=64, help="pairs in the data set")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default=None, choices=["tiny", "wide"],
                   help="tiny (0.8 M UNet; cpu default) or wide (cuda default)")  # fmt: skip
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--workdir", default=None, help="where the inputs are built (default: a tmp)")
    p.add_argument(
        "--profile-dir",
        default=None,
        help="cProfile the timed steps of round 1 into DIR/SIDE-PX.prof (slower)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 3 steps, 32 px")
    p.add_argument("--out", default=None, help="write the runs and the summary as JSON here")
    # The child side.
    p.add_argument("--child", default=None, choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--resolution", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--profile", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1 (a step's time is a gap between two steps)")
    if args.quick:
        args.rounds, args.steps, args.warmup, args.pairs = 1, 3, 2, 16
        args.resolutions = args.resolutions or "32"
    if args.resolutions is None:
        args.resolutions = "512" if args.device == "cuda" else "32,64"
    args.model = args.model or ("wide" if args.device == "cuda" else "tiny")
    args.side = args.child
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(JSON_MARK + json.dumps(run_child(args)), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
