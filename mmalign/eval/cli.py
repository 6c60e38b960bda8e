"""`mmalign eval accuracy` and `mmalign eval report`, and the reward-model options shared with
`mmalign eval winrate` (`--scorer-path`, `--scorer-device`, `--pickapic-root`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli_errors import finite_float
from ..config import InputError

DRAWS = 4  # `eval accuracy --model`: (timestep, noise) draws per pair by default


def scorer_kwargs(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per scorer name: its files from `--scorer-path NAME=PATH` (`path`) and
    `--scorer-path NAME:OPTION=PATH` (`processor`, `tokenizer`, ...; rewards/files.py), and
    `device`/`dtype` for every model scorer."""
    from ..rewards.files import parse_scorer_paths

    paths = parse_scorer_paths(args.scorer_path, names)
    kwargs: dict[str, dict[str, Any]] = {}
    for name in names:
        if name.startswith("toy:"):
            continue  # programmatic: no weights, no device
        kw: dict[str, Any] = {"device": args.scorer_device}
        if args.scorer_dtype:
            kw["dtype"] = args.scorer_dtype
        kwargs[name] = {**kw, **paths.get(name, {})}
    return kwargs


def add_scorer_options(p: argparse.ArgumentParser) -> None:
    from ..data.prompts import PICKAPIC_FLAG
    from ..rewards.files import HELP

    p.add_argument("--scorer-path", action="append", metavar="NAME=PATH", help=HELP)
    p.add_argument(
        "--scorer-device", default="auto", help="auto (CUDA if present), cpu, cuda (default auto)"
    )
    p.add_argument("--scorer-dtype", default=None, help="float32 (default), float16, bfloat16")
    p.add_argument(
        PICKAPIC_FLAG, default=None,  # the flag `data.prompts.pickapic_key` names in messages
        help="local Pick-a-Pic v2 folder (default: $MMALIGN_PICKAPIC, else the hub)",
    )  # fmt: skip


def _cmd_eval_implicit(args: argparse.Namespace) -> int:
    from .implicit import describe_implicit, implicit_accuracy

    result = implicit_accuracy(
        args.model, args.data, base=args.base, batch_size=args.batch_size,
        draws=DRAWS if args.draws is None else args.draws,
        max_rows=args.max_rows, pickapic_root=args.pickapic_root,
        device=None if args.scorer_device == "auto" else args.scorer_device, split=args.split,
        key="--model",
    )  # fmt: skip
    print(describe_implicit(result))
    _write(args.out, result)
    return 0


def _write(out: str | None, result: dict[str, Any]) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {Path(out).resolve()}")


# Options of one mode of `eval accuracy` that the other would silently ignore.
SCORER_ONLY = ("scorer_path", "scorer_dtype", "tune_on", "threshold")
MODEL_ONLY = ("base", "draws")


def refuse_other_mode(args: argparse.Namespace) -> None:
    """Refuse an option of the mode not chosen: with --model no reward scorer loads (the
    diffusion model scores the pairs itself), so --scorer-path, --scorer-dtype, --tune-on and
    --threshold would do nothing; with --scorer there is no reference or noise, so --base and
    --draws would do nothing. (--scorer-device places either: the scorer, or the model.)"""
    if args.model is not None:
        given, mode = [k for k in SCORER_ONLY if getattr(args, k) is not None], "--scorer NAME"
        why = "--model RUN loads no reward scorer (its implicit reward over --base scores pairs)"
    else:
        given, mode = [k for k in MODEL_ONLY if getattr(args, k) is not None], "--model RUN"
        why = "--scorer NAME scores each image once (no reference model, no noise draws)"
    if given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        verb = "apply" if len(given) > 1 else "applies"
        raise InputError(f"eval accuracy: {flags} only {verb} with {mode}; {why}")


def _cmd_eval_accuracy(args: argparse.Namespace) -> int:
    from ..rewards import get_scorer
    from ..rewards.files import require_scorer_files
    from .accuracy import accuracy, describe_accuracy

    if (args.scorer is None) == (args.model is None):
        which = "not both" if args.scorer is not None else "one of them"
        raise ValueError("eval accuracy: give --scorer NAME (a reward model) or --model RUN "
                         f"(a diffusion model's implicit reward), {which}")  # fmt: skip
    refuse_other_mode(args)
    bounds = (("--threshold", args.threshold, 0), ("--batch-size", args.batch_size, 1),
              ("--max-rows", args.max_rows, 1), ("--draws", args.draws, 1))  # fmt: skip
    for flag, value, low in bounds:
        if value is not None and value < low:
            raise InputError(f"{flag} must be >= {low}, got {value}")
    if args.split != "train" and not Path(args.data).expanduser().is_dir():
        raise InputError(f"--split is for a dataset folder; {args.data} names its own split")
    if args.model is not None:
        return _cmd_eval_implicit(args)

    kwargs = scorer_kwargs(args, [args.scorer])
    require_scorer_files(kwargs)  # every missing file named before anything loads
    scorer = get_scorer(args.scorer, **kwargs.get(args.scorer, {}))
    result = accuracy(
        scorer, args.data, tune_on=args.tune_on, threshold=args.threshold,
        pickapic_root=args.pickapic_root, max_rows=args.max_rows, batch_size=args.batch_size,
        split=args.split,
    )  # fmt: skip
    print(describe_accuracy(result))
    _write(args.out, result)
    return 0


def _cmd_eval_flaws(args: argparse.Namespace) -> int:
    from .flaw_area import describe_flaws, flaw_report

    if len(args.dirs) > 2:
        raise InputError(f"eval flaws: one or two eval folders, got {len(args.dirs)}")
    report = flaw_report(args.dirs)
    print("\n".join(describe_flaws(report)))
    _write(args.out, report)
    return 0


def _cmd_eval_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.dir)
    print(f"report: {path.resolve()}")
    return 0


def register_eval(eval_sub) -> None:
    p = eval_sub.add_parser(
        "accuracy",
        help="accuracy on labelled pairs: a reward scorer's (PickScore's tie protocol) or a "
        "diffusion model's implicit reward over its reference",
    )
    p.add_argument("--data", required=True, help="pickapic:<split> (e.g. pickapic:test), toy:pairs")
    p.add_argument("--scorer", default=None, help="scorer name, e.g. pickscore, toy:fidelity")
    p.add_argument(
        "--model", default=None,
        help="instead of --scorer: a tuned diffusion model (training output_dir, LoRA, pipeline) "
        "whose implicit reward over --base is measured (Diffusion-DPO)",
    )  # fmt: skip
    p.add_argument("--base", default=None, help="the reference for --model (default: its base)")
    p.add_argument(
        "--draws", type=int, default=None, help=f"--model: noise draws per pair (default {DRAWS})"
    )
    p.add_argument(
        "--split", default="train",
        help="the split of a --data dataset folder (default train; a --tune-on folder: train)",
    )  # fmt: skip
    p.add_argument("--tune-on", default=None, help="data the tie threshold is tuned on")
    p.add_argument("--threshold", type=finite_float, default=None, help="a fixed tie threshold")
    p.add_argument("--max-rows", type=int, default=None, help="read at most N rows per split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    add_scorer_options(p)
    p.set_defaults(func=_cmd_eval_accuracy)

    from .dense import register_dense

    register_dense(eval_sub)

    p = eval_sub.add_parser(
        "flaws", help="flawed area (toy:flaws artifact heatmaps) of the base and tuned images of "
        "one or two `eval winrate` folders, with 95%% bootstrap CIs of the means over prompts "
        "(two folders: their paired difference)",
    )  # fmt: skip
    p.add_argument("dirs", nargs="+", help="--out folders of mmalign eval winrate on toy prompts")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    p.set_defaults(func=_cmd_eval_flaws)

    p = eval_sub.add_parser("report", help="re-render DIR/report.html of an eval winrate folder")
    p.add_argument("dir", help="the --out folder of mmalign eval winrate")
    p.set_defaults(func=_cmd_eval_report)
