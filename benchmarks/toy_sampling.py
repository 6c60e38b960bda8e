"""toy-sd sampling speed on this machine: seconds per image alone and in a batch.

The timings that used to sit in the unit tests (a wall-clock bar fails on a busy machine, and
a test should not depend on the machine's load). The batched figure is reported as a ratio
against the single-image one measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/toy_sampling.py --out runs/bench/toy_sampling.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mmalign.toy.models import sd
from mmalign.toy.paths import model_path
from mmalign.toy.world import sample_prompts


def seconds_per_image(pipe, prompts: list[str], rounds: int) -> float:
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        sd.sample(pipe, prompts, seed=r)
        times.append((time.perf_counter() - start) / len(prompts))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    pipe = sd.load_pipeline(model_path("sd"))
    prompts = [p.text for p in sample_prompts(args.batch, "heldout", 1234)]
    sd.sample(pipe, prompts[:1], seed=0)  # warm-up
    single = seconds_per_image(pipe, prompts[:1], args.rounds)
    batched = seconds_per_image(pipe, prompts, args.rounds)
    result = {
        "single_s_per_image": round(single, 4),
        f"batch{args.batch}_s_per_image": round(batched, 4),
        "batched_vs_single": round(batched / single, 3),
        "rounds": args.rounds,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
