"""The image kinds labelled by a reward or by style: `pairs` (Pick-a-Pic / Diffusion-DPO) and
`style` (MaPO's Pick-Style)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...suggest import did_you_mean
from ..rewards import style_score
from ..world import sample_prompts
from .common import (
    TIE_MARGIN,
    Built,
    check_ties,
    finish,
    flip_labels,
    label_pair,
    options_of,
    render_mixed,
    stream_generator,
    stream_seed,
)
from .sampling import model_images, toy_model_name, toy_sd_pipeline

PAIRINGS = ("extremes", "all")


def _pairs_of(rewards: Sequence[float], pairing: str) -> list[tuple[int, int]]:
    """The pairs of one prompt's samples, as (a, b) sample indices for `label_pair` (which
    orders them by reward, so two samples give the plain build's row either way);
    `rewards[k]` is sample k's."""
    if pairing == "all":
        return list(itertools.combinations(range(len(rewards)), 2))
    best = max(range(len(rewards)), key=rewards.__getitem__)  # the first of equal maxima
    worst = min(range(len(rewards)), key=rewards.__getitem__)
    return [(0, 1)] if best == worst else [(best, worst)]  # all equal: any two make the tie


def build_pairs(
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    model: Any = None,
    reward: str = "toy:fidelity",
    ties: str = "drop",
    tie_margin: float = TIE_MARGIN,
    label_noise: float = 0.0,
    split: str = "train",
    prompt_split: str = "train",
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 32,
    samples: int = 2,
    pairing: str = "extremes",
    progress: bool = True,
) -> dict[str, Any]:
    """Samples (seeds differ) of each of `n` prompts from toy-sd (or `model`: a toy-sd or
    toy-flow folder), labelled by `reward` (any
    `mmalign.rewards.get_scorer` name: `toy:fidelity`, `toy:style:outlined`, `toy:user:warm`).

    samples: images drawn per prompt (N). 2, the default, gives the rows of the plain
    two-sample build: sample k of prompt i is drawn with seed `base + k * n + i`, so the first
    two of N are always that build's pair.
    pairing (used when N > 2): "extremes", one pair per prompt, the highest- against the
    lowest-reward sample (best against worst of N); "all", every two of the N samples
    (N(N-1)/2 candidate pairs per prompt, each labelled on its own, as Pick-a-Pic holds several
    pairs per prompt; the `tie` count then counts pairs, not prompts).
    ties: "drop" (counted as `tie`) or "keep" (label 0.5) for reward gaps below `tie_margin`.
    label_noise: share of decided pairs whose chosen and rejected are swapped (seeded)."""
    started, options = time.perf_counter(), options_of(locals())
    check_ties(ties, label_noise)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples: images per prompt, an integer >= 2, got {samples!r}")
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing: unknown {pairing!r}; {did_you_mean(str(pairing), PAIRINGS)}")
    from mmalign.rewards import get_scorer

    score = get_scorer(reward).score
    texts = [p.text for p in sample_prompts(n, prompt_split, seed)]
    pipe = toy_sd_pipeline(model)
    name = toy_model_name(pipe)
    drawn = model_images(
        pipe,
        texts * samples,
        stream_seed(seed, "pairs"),
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        desc=f"{name} pairs, {samples} per prompt",
    )
    m = len(texts)
    # one call per sample block, as the two-sample build scored its a and b
    by_sample = [score(drawn[k * m : (k + 1) * m], texts).tolist() for k in range(samples)]
    rewards = list(zip(*by_sample, strict=True))  # [prompt][sample]
    built = Built([], "image")
    for i, text in enumerate(texts):
        for a, b in _pairs_of(rewards[i], pairing):
            row = label_pair(
                {"prompt": text, "source": "toy:pairs"}, drawn[a * m + i], drawn[b * m + i],
                rewards[i][a], rewards[i][b], ties, tie_margin, (name, name),
            )  # fmt: skip
            if row is None:
                built.skipped["tie"] += 1
            else:
                built.rows.append(row)
    built.stats["label_noise"] = flip_labels(built.rows, label_noise, seed)
    return finish(
        "pairs", out_dir, built, n=n, seed=seed, split=split, options=options, started=started
    )


def build_style(
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    model: Any = None,
    rejected_source: str = "model",
    split: str = "train",
    prompt_split: str = "train",
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """MaPO's Pick-Style analog (reference mismatch): chosen = the `outlined` render, a style
    toy-sd never produces; rejected = toy-sd's own sample (`rejected_source="model"`) or a
    flat jittered render (`"render"`, fast). Label 1."""
    started, options = time.perf_counter(), options_of(locals())
    if rejected_source not in ("model", "render"):
        raise ValueError(f"rejected_source must be 'model' or 'render', got {rejected_source!r}")
    prompts = sample_prompts(n, prompt_split, seed)
    texts = [p.text for p in prompts]
    chosen = render_mixed(prompts, ["outlined"] * n, stream_generator(seed, "style-chosen"))
    if rejected_source == "model":
        pipe = toy_sd_pipeline(model)
        rejected_model = toy_model_name(pipe)  # toy-sd, or toy-flow when `model` is one
        rejected = model_images(
            pipe,
            texts,
            stream_seed(seed, "style"),
            steps=steps,
            guidance=guidance,
            batch_size=batch_size,
            progress=progress,
            desc=f"{rejected_model} style",
        )
    else:
        rejected = render_mixed(prompts, ["flat"] * n, stream_generator(seed, "style-rejected"))
        rejected_model = "toy-render-flat"
    rows = [
        {
            "prompt": t,
            "chosen": c,
            "rejected": r,
            "label": 1.0,
            "source": "toy:style",
            "chosen_model": "toy-render-outlined",
            "rejected_model": rejected_model,
        }
        for t, c, r in zip(texts, chosen, rejected, strict=True)
    ]
    stats = {
        "style_outlined_chosen": float(style_score(chosen, "outlined").mean()),
        "style_outlined_rejected": float(style_score(rejected, "outlined").mean()),
    }
    return finish(
        "style",
        out_dir,
        Built(rows, "image", stats=stats),
        n=n,
        seed=seed,
        split=split,
        options=options,
        started=started,
    )
