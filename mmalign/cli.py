"""`mmalign`: the command line. Every command has `--help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import ConfigError


def _cmd_losses(args: argparse.Namespace) -> int:
    from .losses import LOSSES

    rows = [
        (
            name,
            "yes" if loss.reference_free else "no",
            ", ".join(f"{k}={v}" for k, v in loss.defaults.items()) or "-",
            loss.paper,
        )
        for name, loss in LOSSES.items()
    ]
    header = ("name", "reference-free", "arguments (defaults)", "paper")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{len(rows)} losses registered in mmalign.losses.LOSSES")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    from .config import dump_yaml, load_config
    from .train import Config

    cfg = load_config(Config, args.config, args.overrides)
    print(dump_yaml(cfg), end="")
    print(f"# objective: {cfg.build_objective()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .showcase import run_showcase

    print("mmalign demo: every registered loss trains a 16-item bandit policy ...")
    report = run_showcase(args.out, steps=args.steps, seed=args.seed)
    print(report.read_text())
    print(f"report: {report.resolve()}")
    return 0


def _cmd_toy_path(args: argparse.Namespace) -> int:
    from .data.toy.paths import model_path

    print(model_path(args.model))
    return 0


def _cmd_toy_build(args: argparse.Namespace) -> int:
    import json

    from .data.toy.build import build
    from .data.toy.paths import MODELS_DIR

    which = tuple(args.only) if args.only else ("sd", "vlm")
    results = build(which, out_root=args.out or MODELS_DIR, work_dir=args.work, seed=args.seed)
    print(json.dumps(results, indent=2, default=str))
    return 0


def _cmd_toy_data(args: argparse.Namespace) -> int:
    import json

    import yaml

    from .data.toy.datasets import build_dataset

    options = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set '{item}' is not of the form key=value")
        options[key] = yaml.safe_load(value)
    try:
        summary = build_dataset(
            args.kind, args.out, n=args.n, seed=args.seed, model=args.model, **options
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    keep = ("kind", "rows", "paths", "skipped", "seconds")
    print(json.dumps({k: summary[k] for k in keep if k in summary}, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmalign",
        description="Align multimodal generative models with human preferences.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("losses", help="list the registered preference losses")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser("config", help="inspect recipe configs")
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser(
        "show", help="print the resolved config (YAML plus key=value overrides)"
    )
    show.add_argument("config", help="path to a YAML recipe, e.g. configs/sd15/dpo_lora.yaml")
    show.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.learning_rate=1e-5"
    )
    show.set_defaults(func=_cmd_config_show)

    p = sub.add_parser("demo", help="run the main job on the toy world and print its report")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps per loss")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("toy", help="the toy world: base models and datasets")
    toy_sub = p.add_subparsers(dest="toy_command", metavar="ACTION", required=True)
    t = toy_sub.add_parser("path", help="print the folder of a shipped toy model")
    t.add_argument("model", choices=["sd", "vlm"])
    t.set_defaults(func=_cmd_toy_path)
    t = toy_sub.add_parser(
        "build", help="train toy-sd and toy-vlm from scratch (seeded, resumable)"
    )
    t.add_argument("--only", nargs="+", choices=["sd", "vlm"], help="build only these")
    t.add_argument("--out", default=None, help="models folder (default: the package's own)")
    t.add_argument("--work", default=None, help="checkpoint folder for resuming")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_toy_build)
    t = toy_sub.add_parser("data", help="build a toy preference dataset (HF datasets on disk)")
    t.add_argument(
        "kind", choices=["pairs", "style", "users", "flaws", "vqa", "hallucination", "safety"]
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--n", type=int, default=64, help="number of rows (default: 64)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--model", default=None, help="toy-sd folder (default: the shipped one)")
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="builder option, e.g. --set label_noise=0.1 --set ties=keep",
    )  # fmt: skip
    t.set_defaults(func=_cmd_toy_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"mmalign: config error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"mmalign: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
