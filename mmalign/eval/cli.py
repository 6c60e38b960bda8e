"""`mmalign eval accuracy` and `mmalign eval report`, and the reward-model options shared with
`mmalign eval winrate` (`--scorer-path`, `--scorer-device`, `--pickapic-root`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def scorer_kwargs(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per scorer name: `path` from `--scorer-path NAME=PATH`, `device`/`dtype` for all."""
    kwargs: dict[str, dict[str, Any]] = {}
    paths: dict[str, str] = {}
    for item in args.scorer_path or []:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--scorer-path {item!r} is not of the form NAME=PATH")
        if name not in names:
            raise ValueError(f"--scorer-path {name}: not among the scorers {names}")
        paths[name] = path
    for name in names:
        if name.startswith("toy:"):
            continue  # programmatic: no weights, no device
        kw: dict[str, Any] = {"device": args.scorer_device}
        if args.scorer_dtype:
            kw["dtype"] = args.scorer_dtype
        if name in paths:
            kw["path"] = paths[name]
        kwargs[name] = kw
    return kwargs


def add_scorer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scorer-path", action="append", metavar="NAME=PATH",
        help="local weights for a scorer, e.g. pickscore=/models/PickScore_v1 (repeatable)",
    )  # fmt: skip
    p.add_argument("--scorer-device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--scorer-dtype", default=None, help="float32 (default), float16, bfloat16")
    p.add_argument(
        "--pickapic-root", default=None,
        help="local Pick-a-Pic v2 folder (default: $MMALIGN_PICKAPIC, else the hub)",
    )  # fmt: skip


def _cmd_eval_accuracy(args: argparse.Namespace) -> int:
    from ..rewards import get_scorer
    from .accuracy import accuracy

    kwargs = scorer_kwargs(args, [args.scorer]).get(args.scorer, {})
    scorer = get_scorer(args.scorer, **kwargs)
    result = accuracy(
        scorer, args.data, tune_on=args.tune_on, threshold=args.threshold,
        pickapic_root=args.pickapic_root, max_rows=args.max_rows, batch_size=args.batch_size,
    )  # fmt: skip
    tuned = result.get("tuned_on")
    where = f"tuned on {tuned['data']}" if tuned else "given"
    print(
        f"{result['scorer']} on {result['data']}: accuracy {result['accuracy']:.1%} "
        f"(tie threshold {result['threshold']:.4g}, {where}; {result['pairs']} pairs, "
        f"{result['tied_labels']} tied labels, {result['skipped']} rows skipped); "
        f"without ties {result['accuracy_no_ties']:.1%}"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {Path(args.out).resolve()}")
    return 0


def _cmd_eval_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.dir)
    print(f"report: {path.resolve()}")
    return 0


def register_eval(eval_sub) -> None:
    p = eval_sub.add_parser(
        "accuracy", help="a reward scorer's accuracy on human-labelled pairs (PickScore ties)"
    )
    p.add_argument("--data", required=True, help="pickapic:<split> (e.g. pickapic:test), toy:pairs")
    p.add_argument("--scorer", required=True, help="scorer name, e.g. pickscore, toy:fidelity")
    p.add_argument("--tune-on", default=None, help="data the tie threshold is tuned on")
    p.add_argument("--threshold", type=float, default=None, help="a fixed tie threshold")
    p.add_argument("--max-rows", type=int, default=None, help="read at most N rows per split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    add_scorer_options(p)
    p.set_defaults(func=_cmd_eval_accuracy)

    p = eval_sub.add_parser("report", help="re-render DIR/report.html of an eval winrate folder")
    p.add_argument("dir", help="the --out folder of mmalign eval winrate")
    p.set_defaults(func=_cmd_eval_report)
