"""Images per second of every reward scorer at batch 1 vs batch 32, on tiny random weights.

The real loaders (PickScore, HPSv2, ImageReward, CLIP score, aesthetic) load tiny checkpoints
written in the real files' formats (`mmalign.rewards.tiny`), so the numbers measure the scoring path
(preprocessing, tokenising, the model calls, batching) rather than a ViT-H's arithmetic. The
toy scorers (programmatic, no model) are measured the same way for comparison, one call per
image vs one call per 32 images, but not held to the target. The ratio batch-32 / batch-1
throughput of each model scorer is checked against the target (>= 3x) in this run: PASS/MISS.

`dense` is the dense reward head (`dense:<path>`, `mmalign.rewards.dense`) with the toy
backbone in the architecture of `configs/toy/dense_reward.yaml` (the defaults of
`DenseRewardConfig`), freshly initialised from seed 0 and saved with `save_pretrained`, so the
benchmark does not depend on a trained head under runs/. Its `score` (the overall score, what
`eval winrate` reads) skips the heatmap decoder; `dense-maps` times the same head's `.dense`
(both heatmaps and the four scores, what dense-weighted training reads).

    OMP_NUM_THREADS=1 python benchmarks/scoring.py --out runs/bench/scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGET = 3.0
ALL = ["pickscore", "hpsv2", "clip", "aesthetic", "dense", "dense-maps", "imagereward",
       "toy:fidelity", "toy:style"]  # fmt: skip


class _Maps:
    """A dense scorer timed through `.dense` (heatmaps and scores) instead of `.score`."""

    def __init__(self, scorer) -> None:
        self.scorer = scorer

    def score(self, images, prompts):
        return self.scorer.dense(images, prompts)


def build(name: str, root: Path, device: str):
    """The scorer `name` on tiny weights in root, as a function of the batch size."""
    from mmalign.rewards import get_scorer, tiny

    common = {"device": device}
    if name == "pickscore":
        model, processor = tiny.save_pickscore(root / "pickscore")
        return lambda bs: get_scorer(name, path=model, processor=processor, batch_size=bs, **common)
    if name == "hpsv2":
        folder, config = tiny.save_hpsv2(root / "hpsv2")
        return lambda bs: get_scorer(name, path=folder, arch=config, batch_size=bs, **common)
    if name == "clip":
        weights, config = tiny.save_openclip(root / "clip")
        return lambda bs: get_scorer(f"clip:{config}", path=weights, batch_size=bs, **common)
    if name == "aesthetic":
        weights, config = tiny.save_openclip(root / "clip")
        mlp = tiny.save_aesthetic(root / "aesthetic", width=16)
        return lambda bs: get_scorer(name, path=mlp, clip=f"{config}:{weights}", batch_size=bs,
                                     **common)  # fmt: skip
    if name in ("dense", "dense-maps"):
        from mmalign.rewards.dense import DenseRewardConfig, DenseRewardModel

        torch.manual_seed(0)  # a fresh toy head: the timing does not depend on trained weights
        path = DenseRewardModel(DenseRewardConfig()).save_pretrained(root / name)
        if name == "dense":
            return lambda bs: get_scorer(f"dense:{path}", batch_size=bs, **common)
        return lambda bs: _Maps(get_scorer(f"dense:{path}", batch_size=bs, **common))
    if name == "imagereward":  # mmalign's own BLIP port, on a tiny checkpoint in the released
        # file's layout: the third-party ImageReward package is not needed
        folder, med, tok = tiny.save_imagereward(root / "imagereward")
        return lambda bs: get_scorer(name, path=folder, med_config=med, tokenizer=tok,
                                     batch_size=bs, **common)  # fmt: skip
    return lambda bs: get_scorer(name)


def measure(scorer, images: torch.Tensor, prompts: list[str], call_batch: int, repeats: int):
    """Median images/s over `repeats` passes; one `score` call per `call_batch` images."""
    n = len(images)
    scorer.score(images[:call_batch], prompts[:call_batch])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, n, call_batch):
            scorer.score(images[i : i + call_batch], prompts[i : i + call_batch])
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scorers", default=",".join(ALL))
    p.add_argument("--images", type=int, default=128, help="images per pass (default 128)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="the batched size (default 32)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    p.add_argument("--quick", action="store_true", help="32 images, 1 repeat: a smoke run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats = args.batch, 1
    torch.set_num_threads(args.threads)
    from mmalign.toy.world import sample_prompts

    prompts = [t.text for t in sample_prompts(args.images, "heldout", 0)]
    images = torch.rand(
        args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    results, failed = {}, False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scorers.split(","):
            make = build(name, Path(tmp), args.device)
            one, _ = measure(make(1), images, prompts, 1, args.repeats)
            many, _ = measure(make(args.batch), images, prompts, args.batch, args.repeats)
            ratio = many / one
            if name.startswith("toy:"):  # programmatic, no model: shown, not held to the target
                verdict = "-"
            else:
                verdict = "PASS" if ratio >= TARGET else "MISS"
            failed |= verdict == "MISS"
            results[name] = {"images_per_s_batch1": one, f"images_per_s_batch{args.batch}": many,
                             "ratio": ratio, "verdict": verdict}  # fmt: skip
            print(f"{name:14s} batch 1: {one:8.1f} img/s   batch {args.batch}: {many:8.1f} img/s"
                  f"   x{ratio:5.1f}  {verdict}")  # fmt: skip
    print(f"target: batch {args.batch} / batch 1 >= {TARGET:g}x for the model scorers")
    report = {
        "benchmark": "scoring",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "torch": torch.__version__,
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {Path(args.out).resolve()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
