"""PPD's command-line parts (Dang et al. CVPR 2025): `mmalign sample MODEL --ppd RUN --user ID
| --user-embedding FILE [--mix ID2:0.5]` and `mmalign eval winrate --tuned RUN --user IDS`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .cli_errors import finite_float
from .config import InputError
from .words import plural


def add_sample_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ppd", default=None, help="a PPD training output_dir (its user branch)")
    p.add_argument("--user", default=None, help="--ppd: the user id to condition on")
    p.add_argument(
        "--user-embedding", default=None, help="--ppd: a user_embeddings.safetensors file instead"
    )
    p.add_argument("--mix", default=None, help="--ppd: ID2:WEIGHT, (1-w) e_user + w e_ID2")
    add_scale_option(p)


def add_scale_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--user-scale", type=finite_float, default=1.0,
        help="PPD: the user branch's weight in every cross-attention layer (IP-Adapter's scale; "
        "1 as trained, 0 the base model)",
    )  # fmt: skip


def user_scale(args: argparse.Namespace) -> float:
    """`--user-scale`, checked: a finite number >= 0."""
    s = float(args.user_scale)
    if not (math.isfinite(s) and s >= 0.0):
        raise InputError(f"--user-scale {s}: expected a number >= 0 (1 as trained)")
    return s


def add_winrate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--user", default=None,
        help="PPD: score each user with its own reward (toy:user:<id>): ids separated by commas, "
        "or heldout / train / named; adds the user x conditioning matrix",
    )  # fmt: skip
    p.add_argument("--interpolate", default=None, help="--user: A:B, sweep the A->B mix")
    p.add_argument("--no-matrix", action="store_true", help="--user: skip the matrix")
    add_scale_option(p)


def refuse_stray_options(args: argparse.Namespace, needs: str) -> None:
    """PPD options given without `needs` (`--ppd` for sample, `--user` for winrate) would be
    ignored: a clear error instead."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("user", "user_embedding", "mix", "interpolate", "no_matrix")
        if name != needs.lstrip("-") and getattr(args, name, None) not in (None, False)
    ]
    if getattr(args, "user_scale", 1.0) != 1.0:
        given.append("--user-scale")
    if given:
        verb = "apply" if len(given) > 1 else "applies"
        what = {"--ppd": "--ppd RUN (a PPD training output_dir)", "--user": "--user IDS (PPD)"}
        raise InputError(f"{', '.join(given)} only {verb} with {what.get(needs, needs)}")


def sample_embedding(
    args: argparse.Namespace, base: str | None = None, device: object = None
) -> object:
    """The embedding `mmalign sample --ppd` conditions on (torch tensor [D]); `base`: the
    model a new toy user's examples are sampled from (default: the run's); `device`: where a
    new user's encoder runs."""
    from .diffusion.ppd_users import embedding_file, mix, parse_mix, user_embeddings

    if args.user_embedding is not None:  # --user picks one of several users in the file
        e = embedding_file(args.user_embedding, args.user)
    elif args.user is not None:
        e = user_embeddings(args.ppd, [args.user], base, device=device)[args.user]
    else:
        raise InputError("--ppd needs --user ID or --user-embedding FILE")
    if args.mix is not None:
        other, w = parse_mix(args.mix)
        e_other = user_embeddings(args.ppd, [other], base, device=device)[other]
        if e.shape != e_other.shape:
            source = args.user_embedding or f"--user {args.user}"
            raise InputError(
                f"--mix {args.mix}: {source} has an embedding of shape {tuple(e.shape)} and "
                f"{other} one of shape {tuple(e_other.shape)}; mix two embeddings of one encoder"
            )
        e = mix(e, e_other, w)
    return e


def cmd_sample_ppd(args: argparse.Namespace) -> int:
    from .devices import device_options
    from .diffusion import ppd
    from .diffusion.ppd_users import UserPipeline, load_ppd
    from .diffusion.recipe import run_info
    from .diffusion.sample import (
        generate,
        sampling_defaults,
        sampling_resolution,
        save_sample_grid,
        size_argument,
    )

    if args.lora:
        raise InputError("--ppd and --lora cannot be combined")
    if not Path(args.ppd).joinpath(ppd.ADAPTER_FILE).is_file():
        raise InputError(f"--ppd {args.ppd}: no {ppd.ADAPTER_FILE} (a PPD training output_dir)")
    base = None if Path(args.model).joinpath("mmalign_run.json").is_file() else args.model
    if base is None and Path(args.model).resolve() != Path(args.ppd).resolve():
        # another run's tuned weights would be dropped for the PPD run's base, silently
        raise InputError(
            f"{args.model} is a training output_dir: --ppd loads its user branch on a base "
            f"model, so give the base (or the PPD run {args.ppd} itself, for its base)"
        )
    scale = user_scale(args)
    device, dtype = device_options(args)
    model, _ = load_ppd(args.ppd, base, scale, device=device, dtype=dtype)
    e = sample_embedding(args, base, device)
    pipe = UserPipeline(model.pipe, e)  # a width mismatch is an error here
    steps, guidance = sampling_defaults(model, args.steps, args.guidance)
    resolution = sampling_resolution(model, args.resolution, run_info(args.ppd))
    prompts = [p for p in args.prompt for _ in range(args.n)]
    images = generate(
        pipe, prompts, seed=args.seed, steps=steps, guidance=guidance, batch_size=args.batch_size,
        resolution=size_argument(model, resolution),
    )  # fmt: skip
    who = args.user or Path(args.user_embedding).name
    header = f"user {who}{f' mix {args.mix}' if args.mix else ''}"
    if scale != 1.0:
        header += f", user scale {scale:g}"
    # each row's seed in its label
    print(f"grid: {save_sample_grid(images, prompts, args.seed, header, args.out)}")
    return 0


def user_prompts(
    spec: str, pickapic_root: str | None = None, keep_position: bool = False
) -> list[str]:
    """The prompts of `--prompts`; a toy spec (`toy:heldout[:N]`) without its size and position
    words, as `toy:users` writes its prompts (both are the family's tastes, not the prompt's);
    `keep_position` for the named users, whose prompts keep their position words."""
    from dataclasses import replace

    from .data.prompts import PICKAPIC_FLAG, resolve_prompts
    from .toy.world import parse_prompt

    prompts = resolve_prompts(spec, pickapic_root=pickapic_root, pickapic_flag=PICKAPIC_FLAG)
    if spec.startswith("toy:"):
        place = {} if keep_position else {"position": "center"}
        prompts = [replace(parse_prompt(p), size="medium", **place).text for p in prompts]
    return prompts


def cmd_winrate_users(args: argparse.Namespace) -> int:
    """`mmalign eval winrate --tuned RUN --user IDS`: per-user win rates, matrix, sweep."""
    from .devices import device_options
    from .diffusion.load import load_pipeline
    from .diffusion.ppd_users import load_ppd, user_embeddings, user_set
    from .diffusion.recipe import run_info
    from .diffusion.sample import sampling_defaults, sampling_resolution, size_argument
    from .eval.ppd_winrate import run_user_winrate, shown_rho

    ignored = []  # winrate options this path does not read: refused, not silently dropped
    if getattr(args, "seeds_per_prompt", 1) != 1:
        ignored.append(f"--seeds-per-prompt {args.seeds_per_prompt} (one image per prompt)")
    if getattr(args, "scorers", "toy:fidelity") != "toy:fidelity":
        ignored.append(f"--scorers {args.scorers} (each user's own reward, toy:user:<id>)")
    if ignored:
        raise InputError(f"eval winrate --user does not take {'; '.join(ignored)}")
    scale = user_scale(args)
    users = user_set(args.user)  # the table, average and matrix are over these
    embedded = list(users)
    pair = None
    if args.interpolate:
        a, sep, b = args.interpolate.partition(":")
        if not sep or not a or not b:
            raise InputError(f"--interpolate {args.interpolate!r}: expected A:B, e.g. h00:h03")
        pair = (a, b)
        embedded += [u for u in pair if u not in users]  # for the sweep only
    device, dtype = device_options(args)  # the PPD model and its base alike
    # unknown ids fail here; a new user's encoder runs on the device too
    embeddings = user_embeddings(args.tuned, embedded, args.base, device=device)
    model, _ = load_ppd(args.tuned, args.base, scale, device=device, dtype=dtype, key="--base")
    base = load_pipeline(model.source, dtype=dtype, device=device)
    from .toy.rewards import tastes_place

    keep = not any(tastes_place(u) for u in embedded)
    prompts = user_prompts(args.prompts, args.pickapic_root, keep_position=keep)
    if args.n is not None:
        prompts = prompts[: args.n]
    steps, guidance = sampling_defaults(base, args.steps, args.guidance)
    resolution = sampling_resolution(base, args.resolution, run_info(args.tuned))
    results = run_user_winrate(
        base.pipe, model.pipe, prompts, embeddings, args.out, seed=args.seed, steps=steps,
        guidance=guidance, batch_size=args.batch_size, matrix=not args.no_matrix,
        interpolate=pair, meta={"base": base.source, "tuned": str(args.tuned),
                                "prompt_source": args.prompts, "resolution": resolution},
        users=users, resolution=size_argument(base, resolution),
    )  # fmt: skip
    for u, r in results["users"].items():
        lo, hi = r["ci95"]
        print(f"{u}: win rate {r['win_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}, n={r['n']}), "
              f"mean {r['base_mean']:.4f} -> {r['tuned_mean']:.4f}")  # fmt: skip
    print(f"average win rate over {plural(len(results['users']), 'user')}: "
          f"{results['average_win_rate']:.1%}")  # fmt: skip
    if "specificity" in results:
        s = results["specificity"]
        print(f"specificity: {s['hits']}/{s['pairs']} ordered pairs ({s['share']:.1%}); both "
              f"users of a pair on their own: {s['mutual']}/{s['unordered_pairs']}")  # fmt: skip
    if "taste_response" in results:
        r = results["taste_response"]
        print("taste response (Spearman over users, weight vs the samples' mean): " + ", ".join(
            f"{axis} {shown_rho(r['spearman'][axis])}" for axis in r["axes"]))  # fmt: skip
    if "interpolation" in results:
        s = results["interpolation"]
        print(f"interpolation {s['a']}->{s['b']}: Spearman {s['b']} up "
              f"{shown_rho(s['spearman_b_up'], False)}, {s['a']} down "
              f"{shown_rho(s['spearman_a_down'], False)}")  # fmt: skip
    print(f"results: {Path(args.out).resolve() / 'results.json'}")
    print(f"report: {Path(results['report']).resolve()}")
    return 0
