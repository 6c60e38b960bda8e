"""`mmalign`: the command line. Every command has `--help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_errors import at_least_one
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


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import Config
    from .train.loop import train

    cfg = load_config(Config, args.config, args.overrides)
    from .train.sources import check_sources

    check_sources(cfg)  # every missing model and data set named at once, before any loading
    if cfg.model.kind == "vlm":
        from .vlm.recipe import VLMRecipe as recipe
    elif cfg.model.kind == "reward":
        from .reward_model.recipe import RewardRecipe as recipe
    elif cfg.ppd is not None:  # PPD: the diffusion recipe with a user branch
        from .diffusion.ppd_recipe import PPDRecipe as recipe
    else:  # SD1.5 / SDXL, or SD3 / FLUX: the scheduler of the pipeline decides
        from .diffusion.flow_recipe import diffusion_recipe as recipe

    result = train(cfg, recipe)
    if result.saved:  # the steps this invocation ran (a resume at the last step ran none)
        print(f"mmalign: {result.line()}")
        print(f"weights: {result.saved['path']}")
        print(f"metrics: {result.output_dir / 'metrics.jsonl'}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import CONFIG, run_demo

    print(f"mmalign demo: MaPO on toy-sd ({CONFIG.name}), then a win rate over the base ...")
    report, results = run_demo(args.out, overrides=tuple(args.overrides))
    r = results["scorers"]["toy:fidelity"]
    lo, hi = r["ci95"]
    print(report.read_text())
    print(f"win rate on toy:fidelity: {r['win_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%})")
    print(f"grid: {Path(results['grid']).resolve()}")
    print(f"report: {report.resolve()}")
    return 0


def _cmd_showcase(args: argparse.Namespace) -> int:
    from .showcase import run_showcase

    at_least_one(args, "steps")
    print("mmalign showcase: every registered loss trains a 16-item bandit policy ...")
    report = run_showcase(args.out, steps=args.steps, seed=args.seed)
    print(report.read_text())
    print(f"report: {report.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmalign",
        description="Align multimodal generative models with human preferences.",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="show the traceback of an input error (also MMALIGN_DEBUG=1); any place on the line, "
        "except as an option's value or after --",
    )  # fmt: skip
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

    p = sub.add_parser("train", help="train a recipe: mmalign train CONFIG [key=value ...]")
    p.add_argument("config", help="YAML recipe, e.g. configs/toy/mapo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=100")
    p.set_defaults(func=_cmd_train)

    from .sample_cli import register_sample, register_winrate

    register_sample(sub)  # `mmalign sample`

    p = sub.add_parser("eval", help="evaluate models")
    eval_sub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    register_winrate(eval_sub)  # `mmalign eval winrate`
    from .eval.cli import register_eval as register_eval_scorers

    register_eval_scorers(eval_sub)
    from .vlm.cli import register, register_eval

    register_eval(eval_sub)
    register(sub)
    from .data_cli import register as register_data

    register_data(sub)  # `mmalign data show`
    from .vlm.data import register as register_vlm_data

    register_vlm_data(sub)  # `mmalign data realign`
    from .vlm.prism.cli import register as register_prism

    register_prism(sub)  # `mmalign data prism-mcts`
    from .eval.diagnose_diffusion import diagnose_diffusion
    from .vlm.diagnose_cli import register as register_diagnose

    register_diagnose(sub, on_diffusion=diagnose_diffusion)  # `mmalign data diagnose`
    from .diffusion.invert_cli import register as register_invert

    register_invert(sub)  # `mmalign invert` (ReNoise)

    p = sub.add_parser(
        "demo", help="the main job on the toy world: train MaPO on toy-sd, report its win rate"
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("showcase", help="every registered loss on a 16-item bandit (seconds)")
    p.add_argument("--out", default="runs/showcase", help="output folder")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps per loss")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_showcase)

    from .toy_cli import register as register_toy

    register_toy(sub)  # `mmalign toy path|build|data`

    # the labeling app (folder apps/label, package mmalign_label), imported only here
    from mmalign_label.cli import register as register_label

    register_label(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. Bad input ends with a message naming it and exit status 2, no traceback
    (`--debug` or MMALIGN_DEBUG=1 shows it); any other error keeps its traceback
    (mmalign/cli_errors.py says which is which)."""
    from .cli_errors import debug_requested, input_error_message

    parser = build_parser()
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv), parser)
    args, extras = parser.parse_known_args(argv)
    if extras:  # under the command's usage, with the option (or recipe key) probably meant
        from .cli_errors import unknown_arguments

        unknown_arguments(parser, argv, extras)
    try:
        return int(args.func(args))
    except Exception as err:
        loop = sys.modules.get(f"{__package__}.train.loop")  # loaded if training ran
        if loop is not None and isinstance(err, loop.TrainingError) and not debug:
            print(f"mmalign: training stopped: {err}", file=sys.stderr)
            return 1
        message = input_error_message(err)
        if message is None or debug:
            raise
        kind = "config error" if isinstance(err, ConfigError) else "error"
        print(f"mmalign: {kind}: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
