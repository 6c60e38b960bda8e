"""Win rates of a tuned model over its base: same prompts, same seeds, same sampler.

For every scorer, prompt i is a win for the tuned model if its image scores higher than the
base's image for the same prompt and seed (METHODS.md section 4); an exact tie counts as half
a win. The 95% interval is a percentile bootstrap over prompts. The images are drawn, saved
and reused by a later run with the same models and sampler as saved_images.py says; this
module scores them (`score_both`, one scorer at a time), computes the statistics
(`win_stats`) and writes the results, per-prompt scores, grid and report (`run_winrate`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..devices import sampling_precision
from ..diffusion.sample import to_pil_images
from ..grid import pair_grid
from ..rewards import get_scorer, split_name
from ..rewards.files import require_scorer_files
from ..stats import bootstrap_ci
from .report import split_at_ceiling

# callers (benchmarks, tests) also import these from here, where they lived before
from .saved_images import (
    fingerprint,
    generate_or_reuse,
    image_file,
    image_seed,
    on_base,
    sync_settings,
    text_encoding,
)

BOOTSTRAP = 10_000
GRID_ROWS = 16


def win_stats(
    base: torch.Tensor,
    tuned: torch.Tensor,
    seed: int = 0,
    *,
    seeds_per_prompt: int = 1,
    ceiling: float | None = None,
) -> dict[str, Any]:
    """Win rate (ties count half) with a 95% bootstrap CI, and both models' mean and median.

    With several seeds per prompt the scores are ordered prompt-major ([P*K], K seeds of
    prompt 0 first) and the bootstrap resamples prompts, not images: images of one prompt are
    not independent draws.

    ceiling: the scorer's best possible score (toy:fidelity's 1.0). Where the base image already
    reaches it the tuned one can at best tie, so a base that draws many prompts perfectly caps
    the win rate well below 100%; `below_ceiling` then gives the same statistics over the
    images whose base scores below it, and `at_ceiling` counts the others and how many of them
    the tuned model lost.
    """
    base, tuned = base.double(), tuned.double()
    # a NaN compares false both ways, so it would count as a silent loss for the tuned model
    bad = {name: int(s.isnan().sum()) for name, s in (("base", base), ("tuned", tuned))}
    if any(bad.values()):
        raise ValueError(
            f"the scorer gave NaN for {bad['base']} base and {bad['tuned']} tuned image(s) of "
            f"{base.numel()}; a half-precision scorer can overflow (--scorer-dtype float32)"
        )
    outcome = (tuned > base).double() + 0.5 * (tuned == base).double()
    n = outcome.numel()
    if n % seeds_per_prompt:
        raise ValueError(f"{n} scores are not {seeds_per_prompt} seeds per prompt")
    per_prompt = outcome.view(-1, seeds_per_prompt).mean(dim=1)
    stats = {
        "win_rate": float(outcome.mean()),
        "ci95": bootstrap_ci(per_prompt, seed, BOOTSTRAP),
        "base_mean": float(base.mean()),
        "tuned_mean": float(tuned.mean()),
        "base_median": float(base.median()),
        "tuned_median": float(tuned.median()),
        "n": n,
        "prompts": per_prompt.numel(),
        **_tally(base, tuned),
    }
    if ceiling is None:
        return stats
    below = base < ceiling
    stats["at_ceiling"] = {
        "ceiling": ceiling,
        "n": int((~below).sum()),
        "lost": int((tuned[~below] < base[~below]).sum()),
    }
    kept = below.view(-1, seeds_per_prompt).double()
    counts = kept.sum(dim=1)
    if not bool((counts > 0).any()):
        stats["below_ceiling"] = None
        return stats
    sums = (outcome.view(-1, seeds_per_prompt) * kept).sum(dim=1)
    per_kept = (sums / counts.clamp(min=1))[counts > 0]
    stats["below_ceiling"] = {
        "win_rate": float(outcome[below].mean()),
        # resampled by prompt, weighted by each prompt's kept images: the interval of the
        # pooled win rate above, not of an unweighted mean of per-prompt rates
        "ci95": bootstrap_ci(per_kept, seed, BOOTSTRAP, weights=counts[counts > 0]),
        "n": int(below.sum()),
        "prompts": per_kept.numel(),
        **_tally(base[below], tuned[below]),
    }
    return stats


def _tally(base: torch.Tensor, tuned: torch.Tensor) -> dict[str, int]:
    return {
        "wins": int((tuned > base).sum()),
        "ties": int((tuned == base).sum()),
        "losses": int((tuned < base).sum()),
    }


def describe(name: str, r: dict[str, Any]) -> str:
    """One scorer's `win_stats` as the lines `mmalign eval winrate` prints."""
    lo, hi = r["ci95"]
    text = (
        f"{name}: win rate {r['win_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}, n={r['n']}, "
        f"wins/ties/losses {r['wins']}/{r['ties']}/{r['losses']}), "
        f"mean {r['base_mean']:.4f} -> {r['tuned_mean']:.4f}"
    )
    if split_at_ceiling(r):
        c, top = r["below_ceiling"], r["at_ceiling"]
        text += (
            f"\n  where the base scores below {top['ceiling']:g}: win rate {c['win_rate']:.1%} "
            f"(95% CI {c['ci95'][0]:.1%}-{c['ci95'][1]:.1%}, n={c['n']}, "
            f"wins/ties/losses {c['wins']}/{c['ties']}/{c['losses']}); "
            f"{top['n']} base images at {top['ceiling']:g}, {top['lost']} of them lost"
        )
    return text


def score_both(
    name: str, kwargs: dict[str, Any], base: torch.Tensor, tuned: torch.Tensor, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor, str, float | None]:
    """(base scores, tuned scores, the scorer's model name, its ceiling) from scorer `name`,
    loaded for this call only and freed before returning (its GPU memory given back), so an
    evaluation with pickscore, hpsv2, imagereward and aesthetic holds one of them at a time."""
    scorer = get_scorer(name, **kwargs)
    try:
        b, t = scorer.score(base, texts).cpu(), scorer.score(tuned, texts).cpu()
        return b, t, getattr(scorer, "name", name), getattr(scorer, "ceiling", None)
    finally:
        del scorer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run_winrate(
    base_pipe,
    tuned_pipe,
    prompts: Sequence[str],
    scorers: Sequence[str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 2.5,
    batch_size: int = 50,
    seeds_per_prompt: int = 1,
    scorer_kwargs: dict[str, dict[str, Any]] | None = None,
    report: bool = True,
    meta: dict[str, Any] | None = None,
    resolution: int | None = None,
) -> dict[str, Any]:
    """Generate with both pipelines (reusing images already in out_dir), score with every
    scorer (one loaded at a time, freed before the next: `score_both`), write `results.json`,
    `per_prompt.jsonl` (one line per prompt and seed), `grid.png` (cards numbered by prompt
    index, as the report and the image files) and, with `report`, `report.html`.
    `resolution`: the image side both models sample at (None: the pipelines' default, as
    images saved before the option existed). A scorer name, a toy scorer's argument
    (`toy:user:<id>`) and a model scorer's files and argument (a hub id in the cache when
    offline, a local path that exists, an HPSv2 version: `rewards.files`) are checked before
    any image is drawn; a model scorer's weights load only once the images exist (saved: a
    rerun reuses them)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if seeds_per_prompt < 1:
        raise ValueError(f"seeds_per_prompt must be >= 1, got {seeds_per_prompt}")
    started = time.perf_counter()
    scorer_kwargs = scorer_kwargs or {}
    for name in scorers:  # a typo fails before any image is drawn
        if split_name(name)[0].startswith("toy:"):  # programmatic, no weights: build it now,
            get_scorer(name, **scorer_kwargs.get(name, {}))  # so `toy:user:wram` fails here
    # every model scorer's files (hub ids in the cache when offline, local paths there, an
    # HPSv2 version known), all named at once, before any image is drawn: nothing loads
    require_scorer_files({name: scorer_kwargs.get(name, {}) for name in scorers})
    base_id, tuned_id = (meta or {}).get("base"), (meta or {}).get("tuned")
    precision = {f"{model}_{k}": v for model, pipe in (("base", base_pipe), ("tuned", tuned_pipe))
                 for k, v in sampling_precision(pipe).items()}  # fmt: skip
    sync_settings(
        out_dir,
        {"base": base_id, "base_weights": fingerprint(base_id),
         "base_text_encoding": text_encoding(base_pipe), "tuned": tuned_id,
         "tuned_weights": fingerprint(tuned_id), "tuned_text_encoding": text_encoding(tuned_pipe),
         **precision, "steps": steps, "guidance": guidance, "resolution": resolution},
        tuned_on_base=on_base(tuned_id),
    )  # fmt: skip
    # Prompt-major order: the K seeds of prompt 0, then prompt 1, ...
    index = [i for i in range(len(prompts)) for _ in range(seeds_per_prompt)]
    seeds = [image_seed(seed, i, k) for i in range(len(prompts)) for k in range(seeds_per_prompt)]
    texts = [prompts[i] for i in index]
    sampler = {"steps": steps, "guidance": guidance, "batch_size": batch_size,
               "resolution": resolution}  # fmt: skip
    base, made_b = generate_or_reuse(base_pipe, "base", texts, seeds, index, out_dir, **sampler)
    tuned, made_t = generate_or_reuse(tuned_pipe, "tuned", texts, seeds, index, out_dir, **sampler)
    results: dict[str, Any] = {"scorers": {}}
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in scorers:
        b, t, model, ceiling = score_both(name, scorer_kwargs.get(name, {}), base, tuned, texts)
        scores[name] = (b, t)
        stats = win_stats(b, t, seed, seeds_per_prompt=seeds_per_prompt, ceiling=ceiling)
        results["scorers"][name] = {**stats, "model": model}
    with (out_dir / "per_prompt.jsonl").open("w") as f:
        for j, (i, s) in enumerate(zip(index, seeds, strict=True)):
            row = {
                "prompt_index": i, "prompt": texts[j], "seed": s,
                "base_image": image_file("base", i, texts[j], s),
                "tuned_image": image_file("tuned", i, texts[j], s),
                "scores": {
                    n: {"base": float(b[j]), "tuned": float(t[j])} for n, (b, t) in scores.items()
                },
            }  # fmt: skip
            f.write(json.dumps(row) + "\n")
    k = min(GRID_ROWS, len(texts))
    grid = pair_grid(
        texts[:k], to_pil_images(base[:k]), to_pil_images(tuned[:k]),
        {n: (b[:k].tolist(), t[:k].tolist()) for n, (b, t) in scores.items()},
        seeds=seeds[:k] if seeds_per_prompt > 1 else None, numbers=index[:k],
        title=f"tuned {tuned_id or ''} vs base {base_id or ''}: first {k} of {len(texts)} images",
    )  # fmt: skip
    grid_path = out_dir / "grid.png"
    grid.save(grid_path)
    results.update(
        {
            "prompts": len(prompts),
            "seeds_per_prompt": seeds_per_prompt,
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "grid": str(grid_path),
            "per_prompt": str(out_dir / "per_prompt.jsonl"),
            "images_generated": made_b + made_t,
            "images_reused": 2 * len(texts) - made_b - made_t,
            "seconds": time.perf_counter() - started,
            **(meta or {}),
        }
    )
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if report:
        from .report import write_report

        results["report"] = str(write_report(out_dir))
    return results
