"""PRISM step-level search throughput, batching on vs off, in one run (issue 23).

Both searches run the same rows, model, judge and MCTS settings in this process:

- `batched`: `--trees-per-batch` trees advance in lock-step and every pending expansion of
  every tree is sampled in shared `generate` calls of up to `--batch-size` sequences (what
  `mmalign data prism-mcts` does);
- `unbatched`: one tree at a time and one `generate` call per expansion (its `--children`
  samples together, as `num_return_sequences`).

Reported per mode: nodes made, samples, judge calls, wall seconds, nodes/s, judge calls/s,
`generate` calls and nodes per tree (the two runs sample different trees, so the per-second
rates, not the totals, are compared), then the speed-up of nodes/s (target >= 3x).

    python benchmarks/prism_mcts.py --model runs/toy-prism-sft --trees 64 --iterations 30 \
        --repeats 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any


def run_mode(name: str, rows: list[dict[str, Any]], vlm: Any, args: argparse.Namespace,
             per_batch: int | None, batch_size: int) -> dict[str, Any]:  # fmt: skip
    from mmalign.vlm.prism.generate import StageGenerator
    from mmalign.vlm.prism.judges import make_judge
    from mmalign.vlm.prism.mcts import MCTSConfig
    from mmalign.vlm.prism.search import Search, summarize

    config = MCTSConfig(args.iterations, args.children, args.max_depth)
    generate = StageGenerator(vlm.model, vlm.processor, max_new_tokens=args.max_new_tokens,
                              batch_size=batch_size)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"prism-bench-{name}-") as out:
        search = Search(rows, generate, make_judge(args.judge), config, out,
                        trees_per_batch=per_batch, seed=args.seed)  # fmt: skip
        started = time.perf_counter()
        trees = search.run()
        summary = summarize(search, trees, time.perf_counter() - started)
    this = summary["this_run"]
    return {
        "mode": name, "trees_per_batch": search.trees_per_batch, "batch_size": batch_size,
        "trees": summary["trees"], "nodes": summary["nodes"], "pairs": summary["pairs"],
        "samples": this["samples"], "judge_calls": this["judge_calls"],
        "generate_calls": this["generate_calls"], "seconds": this["seconds"],
        "nodes_per_second": round(summary["nodes"] / this["seconds"], 2),
        "samples_per_second": this["samples_per_second"],
        "judge_calls_per_second": this["judge_calls_per_second"],
        "nodes_per_tree": round(summary["nodes"] / max(1, summary["trees"]), 1),
        "failures": summary["failures"],
    }  # fmt: skip


def _total(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's repeats summed; the rates from the sums."""
    out = dict(runs[0])
    for key in ("trees", "nodes", "pairs", "samples", "judge_calls", "generate_calls"):
        out[key] = sum(r[key] for r in runs)
    out["seconds"] = round(sum(r["seconds"] for r in runs), 2)
    out["nodes_per_second"] = round(out["nodes"] / out["seconds"], 2)
    out["samples_per_second"] = round(out["samples"] / out["seconds"], 2)
    out["judge_calls_per_second"] = round(out["judge_calls"] / out["seconds"], 2)
    out["nodes_per_tree"] = round(out["nodes"] / max(1, out["trees"]), 1)
    out["repeats"] = len(runs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the SFT run (its tokenizer has the tags)")
    parser.add_argument("--data", default="toy:prism")
    parser.add_argument("--judge", default="toy")
    parser.add_argument("--trees", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--max-depth", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--trees-per-batch",
        type=int,
        default=None,
        help="default: batch-size / children (Search's, as in mmalign data prism-mcts)",
    )
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        choices=(1, 2),
        help="2: run off, on, on, off and sum each mode's repeats",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from mmalign.vlm.data import open_vlm_pairs
    from mmalign.vlm.prism.cli import load_policy

    if min(args.children, args.batch_size, args.trees) < 1:
        parser.error("--children, --batch-size and --trees must be >= 1")
    data, _ = open_vlm_pairs(args.data, "train", max_samples=args.trees)
    rows = [data[i] for i in range(len(data))]
    vlm = load_policy(args.model)
    # off, on, on, off: a machine whose load drifts during the run affects both modes alike
    settings = {"unbatched": (1, args.children), "batched": (args.trees_per_batch,
                                                             args.batch_size)}  # fmt: skip
    # a context, not torch.set_grad_enabled(False): the smoke test calls main() in-process and
    # a global switch would leave every later test without autograd
    with torch.no_grad():
        runs = [
            run_mode(m, rows, vlm, args, *settings[m])
            for m in ("unbatched", "batched", "batched", "unbatched")[: 2 * args.repeats]
        ]
    results = [_total([r for r in runs if r["mode"] == m]) for m in ("unbatched", "batched")]
    off, on = results
    speedup = on["nodes_per_second"] / off["nodes_per_second"] if off["nodes_per_second"] else 0
    keys = ("trees", "nodes", "nodes_per_tree", "samples", "judge_calls", "generate_calls",
            "seconds", "nodes_per_second", "judge_calls_per_second")  # fmt: skip
    print("| mode | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for r in results:
        print(f"| {r['mode']} | " + " | ".join(str(r[k]) for k in keys) + " |")
    verdict = "PASS" if speedup >= 3 else "MISS"
    print(f"batched / unbatched nodes per second: {speedup:.2f}x (target >= 3x: {verdict})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "speedup": speedup, "args": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
