"""`mmalign toy ...`: the shipped toy models' folders, building them, and toy datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli_errors import at_least_one
from .config import ConfigError, InputError

TOY_MODELS = ("sd", "vlm", "flow")  # what `mmalign toy build` trains


def _cmd_toy_path(args: argparse.Namespace) -> int:
    from .toy.paths import model_path

    print(model_path(args.model))
    return 0


def _cmd_toy_build(args: argparse.Namespace) -> int:
    import json

    from .toy.models.build import build
    from .toy.paths import MODELS_DIR

    # `toy:sd` is how recipes name them: the prefix is accepted here too
    named = [m.removeprefix("toy:") for m in (*(args.models or []), *(args.only or []))]
    for name in named:
        if name not in TOY_MODELS:
            from .suggest import did_you_mean

            raise InputError(f"toy build: no toy model {name!r}; {did_you_mean(name, TOY_MODELS)}")
    which = tuple(dict.fromkeys(named)) if named else TOY_MODELS
    results = build(which, out_root=args.out or MODELS_DIR, work_dir=args.work, seed=args.seed)
    print(json.dumps(results, indent=2, default=str))
    return 0


def _set_options(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE ...` as builder options, each value read as YAML, as recipe overrides
    are (`1e-2` a number); the options that have their own flag are refused, naming it."""
    import yaml

    from .config import load_yaml, yaml_problem

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set '{item}' is not of the form key=value")
        if key in ("n", "seed", "model"):
            raise ConfigError(f"--set {key}=...: give --{key} instead")
        try:
            options[key] = load_yaml(value)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set '{item}': the value is not YAML ({yaml_problem(err)})"
            ) from None
    return options


def _toy_model(name: str | None) -> str | None:
    """`--model`: a toy model folder, or `toy:sd` / `toy:flow` as recipes and `sample` name them."""
    if name in ("toy:sd", "toy:flow"):
        from .toy.paths import model_path

        return str(model_path(name.removeprefix("toy:")))
    if name is not None and not Path(name).expanduser().is_dir():
        raise InputError(f"--model {name} does not exist (no such toy model folder)")
    return None if name is None else str(Path(name).expanduser())


def _check_out(out: Path, overwrite: bool) -> None:
    """`--out`: refused when it holds an earlier build, unless `--overwrite` (then said on
    stderr, naming what else is there and stays: files made from the replaced build)."""
    from .toy.datasets import BUILT, earlier_build

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    earlier = earlier_build(out)  # the rule `build_dataset` refuses by too
    if earlier is None:
        return
    if not overwrite:
        raise InputError(
            f"--out {out} already holds an earlier build ({earlier}); give --overwrite to "
            "replace it, or another --out"
        )
    others = sorted(p.name for p in out.iterdir() if p.name not in BUILT)
    kept = f"; left as they are: {', '.join(others)}" if others else ""
    print(f"mmalign: --overwrite: replacing the earlier build in {out} ({earlier}){kept}",
          file=sys.stderr)  # fmt: skip


def _cmd_toy_data(args: argparse.Namespace) -> int:
    import json

    from .toy import datasets

    at_least_one(args, "n")
    if args.model is not None and args.kind not in datasets.MODEL_KINDS:
        raise InputError(
            f"--model {args.model}: toy data {args.kind} is rendered, not sampled from a model; "
            f"--model is for {', '.join(datasets.MODEL_KINDS)}"
        )
    model = _toy_model(args.model)
    options = _set_options(args.set or [])
    out = Path(args.out).expanduser()
    _check_out(out, args.overwrite)
    try:
        summary = datasets.build_dataset(
            args.kind,
            out,
            n=args.n,
            seed=args.seed,
            model=model,
            overwrite=args.overwrite,
            **options,
        )
    except (TypeError, ValueError) as err:  # an option's value the builder cannot use
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ConfigError(f"{err}{f' (--set {given})' if given else ''}") from None
    keep = ("kind", "rows", "paths", "skipped", "ties", "seconds")  # ties apart from skipped
    print(json.dumps({k: summary[k] for k in keep if k in summary}, indent=2, default=str))
    return 0


def register(sub: Any) -> None:
    """Add `mmalign toy path|build|data` to the `mmalign` sub-parsers."""
    p = sub.add_parser("toy", help="the toy world: base models and datasets")
    toy_sub = p.add_subparsers(dest="toy_command", metavar="ACTION", required=True)
    t = toy_sub.add_parser("path", help="print the folder of a shipped toy model")
    t.add_argument("model", choices=TOY_MODELS)
    t.set_defaults(func=_cmd_toy_path)
    t = toy_sub.add_parser(
        "build", help="train toy-sd, toy-vlm and toy-flow from scratch (seeded, resumable)"
    )
    # no `choices=` here: argparse checks an empty `nargs="*"` list against them and fails
    t.add_argument(
        "models", nargs="*", metavar="MODEL",
        help="sd, vlm and/or flow (default: all three), e.g. `mmalign toy build flow`",
    )  # fmt: skip
    t.add_argument("--only", nargs="+", choices=TOY_MODELS, help="the same as MODEL")
    t.add_argument("--out", default=None, help="models folder (default: the package's own)")
    t.add_argument("--work", default=None, help="checkpoint folder for resuming")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_toy_build)
    t = toy_sub.add_parser("data", help="build a toy preference dataset (HF datasets on disk)")
    t.add_argument(
        "kind",
        choices=["pairs", "style", "users", "flaws", "vqa", "hallucination", "safety", "prism"],
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument(
        "--overwrite", action="store_true", help="replace an earlier build in --out (else refused)"
    )
    t.add_argument("--n", type=int, default=64, help="rows (default 64; pairs: prompts, less ties)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--model", default=None,
        help="toy:sd, toy:flow or a toy model folder to sample (default: toy-sd)",
    )  # fmt: skip
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="builder option, e.g. --set label_noise=0.1 --set ties=keep",
    )  # fmt: skip
    t.set_defaults(func=_cmd_toy_data)
