"""`mmalign`: the command line. Every command has `--help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_errors import at_least_one, finite_float
from .config import ConfigError, InputError


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
    if result.saved:
        from .words import plural

        print(f"mmalign: trained {plural(result.steps, 'step')} in {result.seconds:.0f} s")
        print(f"weights: {result.saved['path']}")
        print(f"metrics: {result.output_dir / 'metrics.jsonl'}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .devices import device_options

    device, dtype = device_options(args)  # `--device cuda` without one: refused before loading
    if args.ppd is not None:  # PPD: the base with a user branch, conditioned on a user
        from .ppd_cli import cmd_sample_ppd

        at_least_one(args, "n", "steps", "batch_size")
        return cmd_sample_ppd(args)
    from .ppd_cli import refuse_stray_options

    refuse_stray_options(args, "--ppd")
    from .diffusion import apply_lora, load_pipeline, load_tuned
    from .diffusion.recipe import run_info
    from .diffusion.sample import (
        generate,
        sample_grid,
        sampling_defaults,
        sampling_resolution,
        size_argument,
    )
    from .diffusion.tuned import check_lora
    from .model_kind import require_kind

    at_least_one(args, "n", "steps", "batch_size")
    suffixes = (".png", ".jpg", ".jpeg", ".webp")
    if Path(args.out).suffix.lower() not in suffixes:
        raise InputError(
            f"--out {args.out}: give the grid's image path, ending in {', '.join(suffixes)}"
        )
    require_kind(args.model, "model", "diffusion", "`mmalign sample`")  # toy:vlm, a VLM run
    if args.lora:  # before the model loads: a local folder without the LoRA file, a VLM's
        check_lora(args.lora, "--lora")
    run = run_info(args.model)  # a training output_dir: its weights and resolution
    if run is not None:
        model = load_tuned(args.model, dtype=dtype, device=device)
    else:
        model = load_pipeline(args.model, dtype=dtype, device=device)
    if args.lora:
        apply_lora(model, args.lora, key="--lora")
        model.pipe.to(device)  # the LoRA's layers with the rest, wherever PEFT put them
    steps, guidance = sampling_defaults(model, args.steps, args.guidance)
    resolution = sampling_resolution(model, args.resolution, run)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    images = generate(
        model.pipe, prompts, seed=args.seed, steps=steps, guidance=guidance,
        batch_size=args.batch_size, resolution=size_argument(model, resolution),
    )  # fmt: skip
    header = f"{steps} steps, cfg {guidance:g}"
    if size_argument(model, resolution) is not None:  # not the pipeline's own size
        header += f", {resolution} px"
    grid = sample_grid(images, prompts, args.seed, header)  # each row's seed in its label
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"grid: {Path(args.out).resolve()}")
    return 0


def _cmd_eval_winrate(args: argparse.Namespace) -> int:
    from .data.prompts import resolve_prompts
    from .devices import device_options
    from .diffusion import load_pipeline, load_tuned
    from .diffusion.recipe import run_info
    from .diffusion.sample import sampling_defaults, sampling_resolution, size_argument
    from .eval.cli import scorer_kwargs
    from .eval.winrate import describe, run_winrate
    from .rewards import split_name
    from .rewards.files import require_scorer_files

    at_least_one(args, "n", "steps", "batch_size", "seeds_per_prompt")
    device, dtype = device_options(args)  # both models: base and tuned alike
    if args.user is not None:  # PPD: each user scored with its own reward
        from .ppd_cli import cmd_winrate_users

        return cmd_winrate_users(args)
    from .ppd_cli import refuse_stray_options

    refuse_stray_options(args, "--user")
    scorers = [name.strip() for name in args.scorers.split(",") if name.strip()]
    if not scorers:
        raise InputError(f"--scorers {args.scorers!r}: name at least one scorer, e.g. toy:fidelity")
    for name in scorers:  # a typo fails before any model loads
        split_name(name)
    require_scorer_files(scorer_kwargs(args, scorers))  # and so does a scorer file not there
    if not Path(args.tuned).exists():
        raise InputError(f"--tuned {args.tuned} does not exist (no such local folder)")
    from .model_kind import require_kind

    for key, name in (("--tuned", args.tuned), ("--base", args.base)):  # toy:vlm, a VLM run
        if name is not None:
            require_kind(name, key, "diffusion", "`mmalign eval winrate`")
    info = run_info(args.tuned)
    base_name = args.base or (info or {}).get("base")
    if base_name is None:
        raise InputError("--base is needed unless --tuned is a training output_dir")
    prompts = resolve_prompts(args.prompts, pickapic_root=args.pickapic_root)
    if args.n is not None:
        prompts = prompts[: args.n]
    # the base samples with the text encoders and T5 length the run trained (and its tuned
    # model samples) with, as load_tuned loads it: else the comparison measures those too
    run = info or {}
    base = load_pipeline(base_name, drop_t5=run.get("t5") is False, dtype=dtype, device=device)
    if run.get("max_sequence_length") and hasattr(base.pipe, "transformer"):
        base.pipe.mmalign_max_sequence_length = int(run["max_sequence_length"])
    tuned = load_tuned(args.tuned, base_name, dtype=dtype, device=device)
    steps, guidance = sampling_defaults(base, args.steps, args.guidance)
    # both models at the size the run trained at (`--resolution` to choose), not the base's
    # default: SD3 / FLUX recipes train at 512 against a 1024 default
    resolution = sampling_resolution(base, args.resolution, info)
    results = run_winrate(
        base.pipe, tuned.pipe, prompts, scorers, args.out, seed=args.seed,
        steps=steps, guidance=guidance, batch_size=args.batch_size,
        seeds_per_prompt=args.seeds_per_prompt, scorer_kwargs=scorer_kwargs(args, scorers),
        resolution=size_argument(base, resolution),
        meta={"base": base.source, "tuned": str(args.tuned), "prompt_source": args.prompts,
              "resolution": resolution},
    )  # fmt: skip
    for name, r in results["scorers"].items():
        print(describe(name, r))
    print(f"results: {Path(args.out).resolve() / 'results.json'}")
    print(f"grid: {Path(results['grid']).resolve()}")
    print(f"report: {Path(results['report']).resolve()}")
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


RESOLUTION_HELP = (
    "image side in pixels (default: the training run's resolution for a "
    "training output_dir, else the pipeline's default)"
)
# what diffusion/sample.py's sampling_defaults picks when --steps / --guidance are not given
STEPS_HELP = "denoising steps (default: the model's: 20 toy, 50 SD1.5 / SDXL, 28 SD3 / FLUX)"
GUIDANCE_HELP = (
    "classifier-free guidance scale (default: the model's: toy-sd 2.5, toy-flow 3.0, SD1.5 7.5, "
    "SDXL 5.0, SD3 7.0, FLUX 3.5)"
)


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

    p = sub.add_parser("sample", help="sample an image grid from a diffusion model")
    p.add_argument(
        "model", help="pipeline folder, hub id, toy:sd, toy:flow, or a training output_dir"
    )
    p.add_argument("--lora", default=None, help="a LoRA folder to load on top")
    p.add_argument("--prompt", action="append", required=True, help="repeat for more prompts")
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed of the first image (default 0); the grid's row i, counted over every prompt's "
        "--n images in order, uses seed + i, shown in its label",
    )  # fmt: skip
    p.add_argument("--n", type=int, default=1, help="images per prompt (default 1)")
    p.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    p.add_argument("--guidance", type=finite_float, default=None, help=GUIDANCE_HELP)
    p.add_argument("--batch-size", type=int, default=16, help="images per pass (default 16)")
    p.add_argument("--resolution", type=int, default=None, help=RESOLUTION_HELP)
    p.add_argument(
        "--out", default="samples/grid.png",
        help="the grid's image path: .png, .jpg, .jpeg or .webp (default samples/grid.png)",
    )  # fmt: skip
    from .devices import add_device_options
    from .ppd_cli import add_sample_options, add_winrate_options

    add_device_options(p, "the pipeline")
    add_sample_options(p)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("eval", help="evaluate models")
    eval_sub = p.add_subparsers(dest="eval_command", metavar="ACTION", required=True)
    w = eval_sub.add_parser("winrate", help="win rate of a tuned model over its base")
    w.add_argument("--base", default=None, help="base model (default: the run's base)")
    w.add_argument("--tuned", required=True, help="pipeline, LoRA folder or training output_dir")
    w.add_argument(
        "--prompts", default="toy:heldout",
        help="toy:heldout[:N], pickapic:test_unique, parti:FILE, hps:FILE|DIR, or a text file "
        "(default toy:heldout)",
    )  # fmt: skip
    w.add_argument("--n", type=int, default=None, help="use only the first N prompts")
    w.add_argument(
        "--scorers", default="toy:fidelity",
        help="comma-separated scorer names, e.g. pickscore,hpsv2 (default toy:fidelity)",
    )  # fmt: skip
    w.add_argument(
        "--seed", type=int, default=0,
        help="seed of prompt 0's image (default 0): image k of prompt i uses seed + i + 100000 k",
    )  # fmt: skip
    w.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    w.add_argument("--guidance", type=finite_float, default=None, help=GUIDANCE_HELP)
    w.add_argument("--batch-size", type=int, default=50, help="images per pass (default 50)")
    w.add_argument(
        "--seeds-per-prompt", type=int, default=1, help="images per prompt and model (default 1)"
    )
    w.add_argument("--resolution", type=int, default=None, help=RESOLUTION_HELP)
    w.add_argument("--out", required=True, help="output folder (results.json, report.html, ...)")
    add_device_options(w, "both pipelines")
    add_winrate_options(w)
    w.set_defaults(func=_cmd_eval_winrate)
    from .eval.cli import add_scorer_options
    from .eval.cli import register_eval as register_eval_scorers

    add_scorer_options(w)
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
