"""`mmalign sample` and `mmalign eval winrate`: the commands that sample a diffusion model
(a pipeline, a LoRA on it, or a training output_dir) with the same defaults for steps,
guidance and resolution (diffusion/sample.py), and their PPD variants (ppd_cli.py).
`mmalign.cli` registers them."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_errors import at_least_one, finite_float
from .config import InputError

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


def cmd_sample(args: argparse.Namespace) -> int:
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
        sampling_defaults,
        sampling_resolution,
        save_sample_grid,
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
        # `sample` has no --base: the base is the one the run recorded
        model = load_tuned(
            args.model,
            dtype=dtype,
            device=device,
            key="MODEL",
            base_key=f"the base recorded in {args.model}/mmalign_run.json",
        )
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
    # each row's seed in its label
    print(f"grid: {save_sample_grid(images, prompts, args.seed, header, args.out)}")
    return 0


def cmd_eval_winrate(args: argparse.Namespace) -> int:
    from .data.prompts import PICKAPIC_FLAG, resolve_prompts
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
    prompts = resolve_prompts(
        args.prompts, pickapic_root=args.pickapic_root, pickapic_flag=PICKAPIC_FLAG
    )
    if args.n is not None:
        prompts = prompts[: args.n]
    # the base samples with the text encoders and T5 length the run trained (and its tuned
    # model samples) with, as load_tuned loads it: else the comparison measures those too
    run = info or {}
    # named `--base` in messages even when the run gave it: that flag is how to give another
    base = load_pipeline(base_name, drop_t5=run.get("t5") is False, dtype=dtype, device=device,
                         key="--base")  # fmt: skip
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


def register_sample(sub: argparse._SubParsersAction) -> None:
    """`mmalign sample` under the command line's subcommands `sub`."""
    from .devices import add_device_options
    from .ppd_cli import add_sample_options

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
    add_device_options(p, "the pipeline")
    add_sample_options(p)
    p.set_defaults(func=cmd_sample)


def register_winrate(eval_sub: argparse._SubParsersAction) -> None:
    """`mmalign eval winrate` under `mmalign eval`'s actions `eval_sub`."""
    from .devices import add_device_options
    from .eval.cli import add_scorer_options
    from .ppd_cli import add_winrate_options

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
    w.set_defaults(func=cmd_eval_winrate)
    add_scorer_options(w)
