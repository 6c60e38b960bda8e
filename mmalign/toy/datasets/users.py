"""The per-user kind `users` (PPD): one pair per row, labelled by the row's user's taste."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ...suggest import did_you_mean
from ..render import STYLES, palette_tensor
from ..rewards import USER_SETS, tastes_place, user_reward
from ..world import COLORS, POSITIONS, SIZES, ToyPrompt, parse_prompt, sample_prompts
from .common import (
    Built,
    check_ties,
    finish,
    flip_labels,
    label_pair,
    options_of,
    quantise,
    render_mixed,
    stream_generator,
    stream_seed,
)
from .sampling import sample_pairs, toy_model_name, toy_sd_pipeline

WARM, COOL = ("red", "orange", "yellow"), ("blue", "green", "purple")
CANDIDATES = (
    "render", "render-large", "render-layouts", "model", "model-sizes", "model-large",
    "model-layouts",
)  # fmt: skip
# `model-layouts`: what toy-sd can draw that the users taste, without the small size (toy-sd's
# small shapes lose fidelity, which every user's reward multiplies in).
LAYOUTS = tuple((size, place) for size in ("medium", "large") for place in POSITIONS)
USER_TIE_MARGIN = 1e-3  # colour tastes move little within the prompt's colour (see build_users)


def _tint(
    images: torch.Tensor,
    prompts: Sequence[ToyPrompt],
    targets: Sequence[str],
    gen: torch.Generator,
    max_shift: float = 0.18,
) -> torch.Tensor:
    """Shift each shape's fill colour by 0.5-1 x `max_shift` towards `targets` (palette names):
    still read as the prompt's colour (palette colours are >= 0.45 apart, "near" is 0.2, and a
    background stays > 0.25 away), but warmer or cooler, which is what the colour users taste."""
    fill = palette_tensor([p.color for p in prompts])
    direction = palette_tensor(targets) - fill
    direction = direction / direction.norm(dim=1, keepdim=True)
    amount = (0.5 + 0.5 * torch.rand(len(prompts), 1, generator=gen)) * max_shift
    is_fill = (images - fill[:, :, None, None]).abs().amax(1, keepdim=True) < 1e-3
    return quantise(images + is_fill * (direction * amount)[:, :, None, None])


def _user_candidates(
    prompts: Sequence[ToyPrompt], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two renders per prompt that differ in everything the users taste, each independently
    ordered: size word (two different ones), style (one flat, one outlined) and colour tint
    (one towards a warm colour, one towards a cool one). So every user has a preference and
    users disagree about the same pair, which is what a user embedding must learn."""
    n = len(prompts)
    size_a, size_b = _two_sizes(n, gen)
    style_flip, warm_flip = torch.randint(2, (2, n), generator=gen).tolist()
    picks = torch.randint(len(COLORS), (n,), generator=gen).tolist()
    out = []
    for side, sizes in enumerate((size_a, size_b)):
        sized = [replace(p, size=SIZES[s]) for p, s in zip(prompts, sizes, strict=True)]
        styles = [STYLES[f ^ side] for f in style_flip]
        targets = []
        for p, f, k in zip(prompts, warm_flip, picks, strict=True):
            group = [c for c in (WARM if f ^ side else COOL) if c not in (p.color, p.background)]
            targets.append(group[k % len(group)])
        out.append(_tint(render_mixed(sized, styles, gen), prompts, targets, gen))
    return out[0], out[1]


def _large_renders(
    prompts: Sequence[ToyPrompt], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`render-large` candidates: two clean flat renders that differ only in size, the bare
    caption's (medium) and "large", in a random order, so a label is the user's size taste
    alone (with the fidelity of two faithful renders)."""
    out = []
    for sizes in _bare_or_large(len(prompts), gen):
        sized = [replace(p, size=SIZES[s]) for p, s in zip(prompts, sizes, strict=True)]
        out.append(render_mixed(sized, ["flat"] * len(prompts), gen))
    return out[0], out[1]


def _layout_renders(
    prompts: Sequence[ToyPrompt], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`render-layouts` candidates: two clean flat renders of each prompt at two different
    `LAYOUTS`, so a label is the user's size and place taste alone (both renders faithful)."""
    first, second = _layout_captions(prompts, gen)
    flat = ["flat"] * len(prompts)
    a = render_mixed([parse_prompt(t) for t in first], flat, gen)
    return a, render_mixed([parse_prompt(t) for t in second], flat, gen)


def _bare_or_large(n: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """`SIZES` indices of n pairs, medium (the bare caption) against large in a random order."""
    flip = torch.randint(2, (n,), generator=gen).tolist()
    return [1 + f for f in flip], [2 - f for f in flip]


def _two_sizes(n: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """Two different `SIZES` indices for each of n pairs, each order equally likely."""
    size_a = torch.randint(3, (n,), generator=gen)
    size_b = (size_a + 1 + torch.randint(2, (n,), generator=gen)) % 3
    return size_a.tolist(), size_b.tolist()


def _sized_captions(
    prompts: Sequence[ToyPrompt], gen: torch.Generator, large_only: bool = False
) -> tuple[list[str], list[str]]:
    """`model-sizes` candidates: each prompt's caption at two different sizes (small / medium /
    large; a medium caption has no size word), for two toy-sd samples while the row keeps the
    caption without one: toy-sd's own renderings, flaws included, that differ in size, a taste
    the users disagree on (fidelity still decides many labels: toy-sd's small shapes are often
    unreadable). Two samples of the same caption hardly differ in taste (~0.007 on average,
    docs/results.md). `large_only` ("model-large"): the bare caption against "large", in a
    random order: every toy user rejects toy-sd's small shapes for their fidelity, so pairs
    with a small sample carry no user (benchmarks/ppd_size_ceiling.py)."""
    size_a, size_b = _two_sizes(len(prompts), gen)  # drawn either way: same stream as built
    if large_only:
        size_a, size_b = _bare_or_large(len(prompts), gen)

    def captions(sizes: list[int]) -> list[str]:
        return [replace(p, size=SIZES[s]).text for p, s in zip(prompts, sizes, strict=True)]

    return captions(size_a), captions(size_b)


def _layout_captions(
    prompts: Sequence[ToyPrompt], gen: torch.Generator
) -> tuple[list[str], list[str]]:
    """`model-layouts` candidates: each prompt's caption at two different `LAYOUTS` (size
    medium or large, times the five positions), for two toy-sd samples while the row keeps the
    bare caption: toy-sd's own renderings that differ in size and place, the tastes it can
    draw."""
    n, k = len(prompts), len(LAYOUTS)
    first = torch.randint(k, (n,), generator=gen)
    second = (first + 1 + torch.randint(k - 1, (n,), generator=gen)) % k

    def captions(picks: torch.Tensor) -> list[str]:
        return [
            replace(p, size=LAYOUTS[i][0], position=LAYOUTS[i][1]).text
            for p, i in zip(prompts, picks.tolist(), strict=True)
        ]

    return captions(first), captions(second)


def build_users(
    out_dir: str | Path,
    *,
    n: int = 60,
    seed: int = 0,
    model: Any = None,
    candidates: str = "render",
    ties: str = "drop",
    tie_margin: float = USER_TIE_MARGIN,
    label_noise: float = 0.0,
    max_rounds: int = 20,
    split: str = "train",
    prompt_split: str = "train",
    users: str = "named",
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-user labels (PPD): `n` rows balanced over a user set, each a prompt without a size or
    (for the family, who taste place) position word: both are left to taste; two candidates,
    chosen by the row's user's `user_reward`.

    candidates: "render" (`_user_candidates`: size, style and colour tint differ),
    "render-large" (`_large_renders`: only the size, bare caption against "large"),
    "render-layouts" (`_layout_renders`: only size and place), "model"
    (two toy-sd samples), "model-sizes" (two toy-sd samples drawn at two different sizes,
    `_sized_captions`), "model-large" (the bare caption against "large") or "model-layouts"
    (two toy-sd samples at two different sizes and places, `_layout_captions`). Ties (reward gap
    below `tie_margin`) are dropped, counted and redrawn, up to `max_rounds` rounds; a user
    still short after that is reported as `shortfall`. The default margin is small because
    the colour users' rewards differ by ~0.01 between two faithful images of one prompt: their
    taste must not outweigh the prompt (rewards.py).

    users: "named" (the 5 `USERS`, the default), "train" (family users t00-t127) or "heldout"
    (h00-h07, never in a training set); the family draws from its own seeded streams."""
    started, options = time.perf_counter(), options_of(locals())
    check_ties(ties, label_noise)
    if candidates not in CANDIDATES:
        raise ValueError(
            f"candidates must be one of {', '.join(CANDIDATES)}, got {candidates!r}; "
            f"{did_you_mean(candidates, CANDIDATES)}"
        )
    if users not in USER_SETS:
        raise ValueError(f"unknown user set '{users}'; {did_you_mean(users, USER_SETS)}")
    stream = "users" if users == "named" else f"users-{users}"
    pipe = toy_sd_pipeline(model) if candidates.startswith("model") else None
    members = list(USER_SETS[users])
    free_place = any(tastes_place(u) for u in members)
    quota = {u: n // len(members) + (i < n % len(members)) for i, u in enumerate(members)}
    kept: dict[str, list[dict[str, Any]]] = {u: [] for u in members}
    built = Built([], "image")
    for round_ in range(max_rounds):
        owners = [u for u in members for _ in range(quota[u] - len(kept[u]))]
        if not owners:
            break
        prompts = [
            replace(p, size="medium", position="center" if free_place else p.position)
            for p in sample_prompts(len(owners), prompt_split, stream_seed(seed, stream, round_))
        ]
        texts = [p.text for p in prompts]
        if pipe is None:
            make = {"render-large": _large_renders, "render-layouts": _layout_renders}.get(
                candidates, _user_candidates
            )
            a, b = make(prompts, stream_generator(seed, f"{stream}-render", round_))
            models = ("toy-render", "toy-render")
        else:
            first, second = (texts, None)
            if candidates in ("model-sizes", "model-large"):
                first, second = _sized_captions(
                    prompts,
                    stream_generator(seed, f"{stream}-sizes", round_),
                    large_only=candidates == "model-large",
                )
            elif candidates == "model-layouts":
                gen = stream_generator(seed, f"{stream}-layouts", round_)
                first, second = _layout_captions(prompts, gen)
            a, b = sample_pairs(
                pipe,
                first,
                stream_seed(seed, stream, round_),
                steps=steps,
                guidance=guidance,
                batch_size=batch_size,
                progress=progress,
                desc=f"{toy_model_name(pipe)} users round {round_}",
                second_texts=second,
            )
            models = (toy_model_name(pipe),) * 2
        rewards = torch.empty(2, len(owners))
        for u in dict.fromkeys(owners):
            idx = [i for i, o in enumerate(owners) if o == u]
            sub = [texts[i] for i in idx]
            rewards[0, idx] = user_reward(a[idx], sub, u)
            rewards[1, idx] = user_reward(b[idx], sub, u)
        for i, (u, text) in enumerate(zip(owners, texts, strict=True)):
            row = label_pair(
                {"prompt": text, "user_id": u, "source": "toy:users"},
                a[i],
                b[i],
                float(rewards[0, i]),
                float(rewards[1, i]),
                ties,
                tie_margin,
                models,
            )
            if row is None:
                built.skipped["tie"] += 1
            else:
                kept[u].append(row)
    # Interleave the users, so any prefix of the dataset is balanced too.
    built.rows = [
        kept[u][k] for k in range(max(quota.values())) for u in members if k < len(kept[u])
    ]
    built.stats["users"] = {u: len(kept[u]) for u in members}
    built.stats["user_set"] = users
    built.stats["shortfall"] = n - len(built.rows)
    built.stats["label_noise"] = flip_labels(built.rows, label_noise, seed)
    return finish(
        "users", out_dir, built, n=n, seed=seed, split=split, options=options, started=started
    )


# 2: prompts without a position word (place became a taste) and the five-axis user family
build_users.data_version = 2  # type: ignore[attr-defined]
