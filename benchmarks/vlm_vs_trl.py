"""mmalign's VLM DPO step against TRL's `DPOTrainer`, on the same tiny VLM, rows and batch.

Two parts, one run:

(a) Scores. mmalign's `VLMPairScorer` gives each completion the sum of its tokens' log-probs.
    The check compares them with log-probs computed directly with the model (one plain forward
    over the whole sequence, a full log-softmax; tolerance 1e-4), and with TRL's own
    per-sequence log-probs of the same rows (`DPOTrainer.compute_ref_log_probs` on the batch its
    `DataCollatorForVisionPreference` builds). TRL tokenizes the templated prompt with
    `add_special_tokens=False`, so where the tokenizer adds a BOS token (toy-vlm, the tiny
    LLaVA) its sequences lack the BOS mmalign's (and the model's own processor call) have; the
    check also scores TRL's sequences directly, which shows whether that is the whole gap.

(b) One training step, mmalign vs TRL, each side in its own child process (so its peak memory is
    its own). Both: LoRA (rank 8, alpha = rank, no dropout) on the same linear layers of the
    language model (`mmalign.vlm.lora.lora_targets`), initialised from the same seed; sigmoid
    DPO with beta 0.1; reference = the policy with its adapters disabled; AdamW (same lr, weight
    decay 0.01); gradient clipping at 1.0; float32; no gradient checkpointing; the same rows in
    the same order (TRL: sequential sampler). What one timed step includes:

      mmalign  reading the step's rows from the HF dataset (decoding the PNGs), `PairCollator`
               (chat template, processor, tokenization), moving the batch, `VLMPairScorer`
               (policy + reference), `Objective`, backward, clip, AdamW step, zero_grad.
      TRL      the interval between two consecutive `on_step_end` callbacks of
               `trainer.train()`: the dataloader fetching the rows and running
               `DataCollatorForVisionPreference`, `training_step` (policy and reference
               forwards, loss, TRL's metrics, backward), clip, AdamW step, scheduler, zero_grad.
               Logging runs once, after the last step, outside every timed interval.

    s/step is the median over the timed steps after the warm-up steps. Peak memory: on CPU the
    child's peak RSS (`ru_maxrss`), also shown as "+run MB" (peak minus the RSS after importing
    the same libraries on both sides: torch, transformers, peft, trl, mmalign), on CUDA
    `torch.cuda.max_memory_allocated()`.

Targets (issue 5): mmalign time <= 0.7x TRL's, mmalign peak memory <= TRL's. The ratio table
marks each PASS or MISS with this run's numbers.

The children (each side's steps, the score check) live in benchmarks/vlm_vs_trl_children.py.
Run `python benchmarks/vlm_vs_trl.py --help` for the options; `--quick` is a smoke run.
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

from vlm_vs_trl_children import (  # the child side: one side's steps, the score check
    BETA,
    CHECK_ROWS,
    MAX_GRAD_NORM,
    SEED,
    SIDES,
    WEIGHT_DECAY,
    run_check_child,
    run_step_child,
)

JSON_MARK = "BENCH_JSON "
MODELS = ("toy", "llava", "qwen")
TIME_TARGET = 0.7
QUICK = {"steps": 2, "warmup": 1, "batches": "2", "rounds": 1}
FULL = {"steps": 5, "warmup": 2, "batches": "8,32", "rounds": 2}


# ------------------------------------------------------------------------------ the parent


def prepare(workdir: Path, models: list[str], n_rows: int) -> tuple[dict[str, str], str]:
    """Save the tiny random models and build the toy hallucination rows (once per run)."""
    from datasets import load_from_disk

    from mmalign.toy.datasets import build_dataset
    from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl

    paths = {}
    for name in models:
        if name == "toy":
            paths[name] = "toy:vlm"
        else:
            folder = workdir / name
            (tiny_llava if name == "llava" else tiny_qwen2vl)(folder, seed=SEED)
            paths[name] = str(folder)
    data = workdir / "data"
    # Some rows are skipped by the builder (no similar image to retrieve): ask for more.
    build_dataset("hallucination", data, n=2 * n_rows + 16, seed=SEED)
    rows = load_from_disk(str(data / "pairs"))
    if len(rows) < n_rows:
        raise SystemExit(f"the toy builder made {len(rows)} rows; the run needs {n_rows}")
    rows.select(range(n_rows)).save_to_disk(str(workdir / "rows"))
    return paths, str(workdir / "rows")


def _child(args: argparse.Namespace, mode: str, model: str, path: str, rows: str,
           side: str = "mmalign", batch: int = 0) -> dict[str, Any]:  # fmt: skip
    argv = [
        "--child", mode, "--side", side, "--model", model, "--model-path", path,
        "--rows", rows, "--batch", str(batch), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--rank", str(args.rank), "--lr", str(args.lr),
        "--device", args.device, "--threads", str(args.threads),
    ]  # fmt: skip
    result = run_child(argv, args.threads, args.mmap_threshold)
    if "error" in result:
        result.update(model=model, side=side, batch=batch)
    return result


def run_child(argv: list[str], threads: int, mmap_threshold: int | None = None) -> dict[str, Any]:
    """This file in a child process with `argv`; its JSON line, or the error it ended with."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    if mmap_threshold is not None:
        # glibc: blocks from this size up are mmapped and go back to the system when freed, so
        # the peak RSS follows the live memory instead of what the heap happened to keep.
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(JSON_MARK):
            return dict(json.loads(line[len(JSON_MARK) :]))
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
    return {"error": "\n".join(tail), "returncode": proc.returncode}


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds as one result: medians over the timed steps of every round, the
    largest peak of any round (memory hardly varies between rounds; the max is conservative)."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return {**failed[0], "rounds": runs}
    times = [t for r in runs for t in r["step_times"]]
    cpu = [t for r in runs for t in r["cpu_step_times"]]
    first = runs[0]
    return {
        **{k: first[k] for k in ("side", "model", "device", "threads", "batch", "warmup",
                                 "steps", "trainable_params")},
        "s_per_step": statistics.median(times),
        "s_per_step_min": min(times),
        "cpu_s_per_step": statistics.median(cpu),
        "step_times": times,
        "cpu_step_times": cpu,
        "peak_mb": max(r["peak_mb"] for r in runs),
        "train_rss_mb": max(r["train_rss_mb"] for r in runs),
        "step_rss_mb": max(r["peak_rss_mb"] - r["setup_rss_mb"] for r in runs),
        "losses": first["losses"],
        "reference_pass_s": first.get("reference_pass_s"),
        "rounds": runs,
    }  # fmt: skip


# (metric, target): mmalign / TRL must be <= target; None: shown, no target.
RATIO_METRICS = (
    ("s_per_step", TIME_TARGET),
    ("cpu_s_per_step", TIME_TARGET),
    ("peak_mb", 1.0),
    ("train_rss_mb", None),
    ("step_rss_mb", None),
)


def compute_ratios(steps: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[dict]:
    """mmalign side / TRL for every (model, batch) where both ran."""
    out = []
    for model, by_batch in steps.items():
        for batch, sides in by_batch.items():
            trl = sides.get("trl", {})
            for side, ours in sides.items():
                if side == "trl":
                    continue
                for metric, target in RATIO_METRICS:
                    if "error" in ours or "error" in trl or metric not in ours or \
                            metric not in trl or not trl[metric] > 0:  # fmt: skip
                        continue
                    value = ours[metric] / trl[metric]
                    verdict = "-" if target is None else ("PASS" if value <= target else "MISS")
                    out.append({"model": model, "batch": int(batch), "side": side,
                                "metric": metric, "value": value, "target": target,
                                "verdict": verdict})  # fmt: skip
    return out


def _print_tables(checks: dict[str, Any], steps: dict[str, Any], ratios: list[dict]) -> None:
    if checks:
        print("\n(a) scores: max |difference| of summed completion log-probs "
              f"({CHECK_ROWS} rows, chosen and rejected)")  # fmt: skip
        print(f"{'model':<6} {'mmalign-direct':>15} {'<=1e-4':>7} {'TRL-mmalign':>12} "
              f"{'TRL-direct(TRL tokens)':>23}  BOS mmalign/TRL")  # fmt: skip
    for model, c in checks.items():
        if "error" in c:
            print(f"{model:<6} FAILED: {c['error'].splitlines()[-1:]}")
            continue
        bos = f"{c['mmalign_prompt_starts_with_bos']}/{c['trl_prompt_starts_with_bos']}"
        print(f"{model:<6} {c['mmalign_vs_direct_max_abs']:>15.2e} {c['verdict']:>7} "
              f"{c['trl_vs_mmalign_max_abs']:>12.2e} "
              f"{c['trl_vs_direct_trl_tokens_max_abs']:>23.2e}  {bos}")  # fmt: skip
    device = next((r["device"] for b in steps.values() for s in b.values() for r in s.values()
                   if "device" in r), "?")  # fmt: skip
    peak = "peak MB (cuda)" if device.startswith("cuda") else "peak MB (RSS)"
    print(f"\n(b) one DPO step on {device} (medians over the timed steps of every round)")
    print(f"{'model':<6} {'batch':>5} {'side':<14} {'s/step':>8} {'min s':>8} {'cpu s':>8} "
          f"{peak:>14} {'+run MB':>8} {'+step MB':>8} {'loss first->last':>17}")  # fmt: skip
    for model, by_batch in steps.items():
        for batch, sides in by_batch.items():
            for side, r in sides.items():
                if "error" in r:
                    print(
                        f"{model:<6} {batch:>5} {side:<14} FAILED: {r['error'].splitlines()[-1:]}"
                    )
                    continue
                losses = f"{r['losses'][0]:.4f}->{r['losses'][-1]:.4f}"
                print(f"{model:<6} {batch:>5} {side:<14} {r['s_per_step']:>8.4f} "
                      f"{r['s_per_step_min']:>8.4f} {r['cpu_s_per_step']:>8.4f} "
                      f"{r['peak_mb']:>14.1f} {r['train_rss_mb']:>8.1f} {r['step_rss_mb']:>8.1f} "
                      f"{losses:>17}")  # fmt: skip
    print(f"\nratios mmalign / TRL (targets: time <= {TIME_TARGET}, peak memory <= 1)")
    print(f"{'model':<6} {'batch':>5} {'side':<14} {'metric':<15} {'value':>7} {'target':>7}  "
          "verdict")  # fmt: skip
    for r in ratios:
        target = "-" if r["target"] is None else f"{r['target']:g}"
        print(f"{r['model']:<6} {r['batch']:>5} {r['side']:<14} {r['metric']:<15} "
              f"{r['value']:>7.3f} {target:>7}  {r['verdict']}")  # fmt: skip


def run_parent(args: argparse.Namespace) -> int:
    import trl

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model {m!r} (use {', '.join(MODELS)})")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if "trl" not in sides or any(s not in SIDES for s in sides):
        raise SystemExit(f"--sides: a comma list of {', '.join(SIDES)} that includes trl")
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        raise SystemExit(f"--batches: positive pair counts, got {args.batches!r}")
    n_rows = max(max(batches) * (args.warmup + args.steps), CHECK_ROWS)
    start = time.perf_counter()
    checks: dict[str, Any] = {}
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mmalign-bench-vlm-") as tmp:
        paths, rows = prepare(Path(tmp), models, n_rows)
        print(f"[{time.perf_counter() - start:6.1f}s] built models and {n_rows} rows", flush=True)
        for model in models:
            if not args.skip_check:
                checks[model] = c = _child(args, "check", model, paths[model], rows)
                done = "FAILED" if "error" in c else c["verdict"]
                print(f"[{time.perf_counter() - start:6.1f}s] {model} scores: {done}", flush=True)
            steps[model] = {}
            for batch in batches:
                runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
                # Rounds alternate the sides, so a load change on a shared machine hits both.
                for i in range(args.rounds):
                    for side in sides:
                        r = _child(args, "step", model, paths[model], rows, side, batch)
                        runs[side].append(r)
                        done = "FAILED" if "error" in r else f"{r['s_per_step']:.4f} s/step"
                        print(f"[{time.perf_counter() - start:6.1f}s] {model} batch {batch} "
                              f"{side} round {i + 1}: {done}", flush=True)  # fmt: skip
                steps[model][str(batch)] = {side: combine(runs[side]) for side in sides}
    ratios = compute_ratios(steps)
    _print_tables(checks, steps, ratios)
    report = {
        "benchmark": "vlm_vs_trl",
        "config": {
            "models": models, "sides": sides, "batches": batches, "steps": args.steps,
            "warmup": args.warmup,
            "rounds": args.rounds, "rank": args.rank, "lr": args.lr, "beta": BETA,
            "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM,
            "device": args.device, "threads": args.threads, "quick": args.quick,
            "mmap_threshold": args.mmap_threshold,
            "trl": trl.__version__, "python": sys.version.split()[0],
        },
        "checks": checks,
        "steps": steps,
        "ratios": ratios,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    failed = any("error" in c or c.get("verdict") == "MISS" for c in checks.values()) or any(
        "error" in r for b in steps.values() for s in b.values() for r in s.values()
    )
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="mmalign's VLM DPO step and scores against TRL's DPOTrainer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="toy,llava", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--sides", default="mmalign,trl",
                   help="comma list of mmalign (reference = disabled adapters, like TRL), "
                        "mmalign-cached (reference log-probs precomputed by one pass before "
                        "training), trl")  # fmt: skip
    p.add_argument("--batches", default=None,
                   help=f"comma list of pairs per step ({FULL['batches']}; quick "
                        f"{QUICK['batches']})")  # fmt: skip
    for name, what in (("steps", "timed steps"), ("warmup", "untimed steps first"),
                       ("rounds", "child runs per side, alternating the sides")):  # fmt: skip
        p.add_argument(f"--{name}", type=int, default=None,
                       help=f"{what} ({FULL[name]}; quick {QUICK[name]})")  # fmt: skip
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha = rank)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (both sides)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: cuda if available")  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
        help="torch / OpenMP threads of each child (default: $OMP_NUM_THREADS, else 1)",
    )  # fmt: skip
    p.add_argument("--skip-check", action="store_true", help="skip part (a), the score check")
    p.add_argument(
        "--mmap-threshold", type=int, default=None,
        help="CPU memory runs: set glibc's MALLOC_MMAP_THRESHOLD_ (bytes) in the children, so "
        "peak RSS tracks live memory rather than heap caching (it slows the steps: take the "
        "times from a run without it)",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="a smoke run: few small steps")
    p.add_argument("--out", default="runs/bench/vlm_vs_trl.json", help="results as JSON")
    # The child side.
    p.add_argument("--child", choices=["step", "check"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--side", choices=SIDES, default="mmalign", help=argparse.SUPPRESS)
    p.add_argument("--model", default="toy", help=argparse.SUPPRESS)
    p.add_argument("--model-path", default="toy:vlm", help=argparse.SUPPRESS)
    p.add_argument("--rows", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        raise SystemExit("--steps and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        run = run_step_child if args.child == "step" else run_check_child
        print(JSON_MARK + json.dumps(run(args)), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
