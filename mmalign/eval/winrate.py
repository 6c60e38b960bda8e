"""Win rates of a tuned model over its base: same prompts, same seeds, same sampler.

For every scorer, prompt i is a win for the tuned model if its image scores higher than the
base's image for the same prompt and seed (METHODS.md section 4); an exact tie counts as half
a win. The 95% interval is a percentile bootstrap over prompts. Images are saved as PNGs under
`out_dir/images/{base,tuned}/` and reused by a later run with the same models and sampler
(resumable); the models are told apart by their ids, weight files or hub snapshot commit
(`fingerprint`) and, for flow models, the T5 setting they sample with (`text_encoding`); a tuned
model loaded on its base (a LoRA, a UNet, a training run) also by the base's id and weights
(`on_base`). The device type and dtype each model samples in are recorded too
(`devices.sampling_precision`): one seed draws other images on a GPU or in bfloat16.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..devices import CPU_FLOAT32, sampling_precision
from ..diffusion.sample import generate_seeded, to_pil_images
from ..grid import pair_grid
from ..rewards import get_scorer, split_name
from ..rewards.files import require_scorer_files
from ..stats import bootstrap_ci
from ..weights import hub_commit
from .report import split_at_ceiling

BOOTSTRAP = 10_000
# What a saved-images record without a model's device and dtype was drawn with: before
# `--device` / `--dtype`, every image was drawn on the CPU in float32.
BEFORE_PRECISION = {f"{m}_{k}": v for m in ("base", "tuned") for k, v in CPU_FLOAT32.items()}
GRID_ROWS = 16
SEED_STRIDE = 100_000  # seed offset between a prompt's images k and k+1


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


def image_seed(seed: int, prompt_index: int, k: int = 0) -> int:
    """The generator seed of image k of prompt i: `seed + i` for the first image (as before
    several seeds existed), then `seed + i + k * SEED_STRIDE`, so truncating the prompt list
    (`--n`) never changes a prompt's seeds."""
    return seed + prompt_index + k * SEED_STRIDE


def _image_file(model: str, prompt_index: int, prompt: str, seed: int) -> str:
    """`images/<model>/<index>-<prompt hash>-seed<seed>.png`: another prompt list in the same
    folder never picks up an image made for a different prompt."""
    tag = hashlib.sha1(prompt.encode()).hexdigest()[:8]
    return f"images/{model}/{prompt_index:05d}-{tag}-seed{seed}.png"


def fingerprint(source: str | None) -> str | None:
    """Names, sizes and modification times of the weight files under a local model folder (a
    retrained run at the same path gets a new fingerprint); for a hub id the commit of the
    cached snapshot it was loaded from (`weights.hub_commit`: a new revision on the hub, once
    downloaded, is another model); None for a toy name or a hub id not in the cache."""
    if source is None:
        return None
    if not Path(source).exists():
        commit = hub_commit(source)
        return None if commit is None else f"hub:{commit}"
    root = Path(source)
    files = [root] if root.is_file() else sorted(
        p for ext in ("*.safetensors", "*.bin", "*.pt") for p in root.rglob(ext)
        if "checkpoints" not in p.relative_to(root).parts
    )  # fmt: skip
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        name = f.name if f == root else f.relative_to(root)
        digest.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def text_encoding(pipe: Any) -> dict[str, Any] | None:
    """What a flow pipeline (SD3 / SD3.5, FLUX) encodes prompts with when it samples: whether it
    has its T5 encoder and the T5 length it pads to (`sampling_kwargs`, else the family's
    default); None for a pipeline without T5 (SD1.5 / SDXL).

    Recorded with the saved images because neither a model's id nor its weights show it:
    `mmalign eval winrate` loads a run's base with the run's T5 setting, so the same base
    draws other images for a run with T5 dropped or another T5 length."""
    from ..diffusion.flow_load import (
        FlowModel,
        default_max_sequence,
        flow_family,
        is_flow_scheduler,
        sampling_kwargs,
    )

    if getattr(pipe, "transformer", None) is None or not is_flow_scheduler(pipe.scheduler):
        return None
    family = flow_family(pipe)
    length = sampling_kwargs(pipe).get("max_sequence_length") or default_max_sequence(pipe, family)
    return {"t5": FlowModel(pipe, family, "").has_t5, "max_sequence_length": int(length)}


def on_base(tuned: str | None) -> bool:
    """Whether the tuned model's images depend on the base it is loaded on: all but a whole
    pipeline folder (a LoRA, a UNet, a training output_dir sit on `--base`)."""
    return tuned is None or not (Path(tuned) / "model_index.json").is_file()


def _sync_settings(out_dir: Path, settings: dict[str, Any], tuned_on_base: bool = False) -> None:
    """Reuse images in out_dir/images only when they came from the same model and sampler: a
    changed sampler clears both models' images, a changed model only its own (a changed base
    id or weights the tuned model's too where it sits on that base, `tuned_on_base`: a LoRA
    on another base draws other images); said aloud. A setting the old record lacks reads as
    None: records written before `text_encoding` existed lack it, so a flow model's images
    from them are drawn again (they may have used another T5 setting), while a model whose
    setting is None (no T5) keeps its images. A missing device or dtype reads as CPU float32
    (`BEFORE_PRECISION`), the only way images were drawn before they were recorded."""
    path = out_dir / "images" / "settings.json"
    if path.is_file():
        old = {**BEFORE_PRECISION, **json.loads(path.read_text())}
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        stale = set()
        for key in changed:
            stale |= {key.split("_")[0]} if key.startswith(("base", "tuned")) else {"base", "tuned"}
            if tuned_on_base and key in ("base", "base_weights"):
                stale.add("tuned")
        for model in sorted(stale):
            folder = out_dir / "images" / model
            if folder.is_dir():
                print(
                    f"mmalign: {folder} was generated with other settings "
                    f"({', '.join(changed)}); generating again"
                )
                shutil.rmtree(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def generate_or_reuse(
    pipe,
    model: str,
    prompts: Sequence[str],
    seeds: Sequence[int],
    prompt_index: Sequence[int],
    out_dir: Path,
    **sampler: Any,
) -> tuple[torch.Tensor, int]:
    """Images for (prompt, seed) pairs, reading PNGs already under out_dir/images/<model> and
    generating (and saving) only the missing ones; returns (images [N,3,H,W], generated).
    Generated images are quantised to 8 bits before scoring, as the saved PNGs are, so a
    resumed run scores exactly the same pixels."""
    from PIL import Image

    files = [
        out_dir / _image_file(model, i, p, s)
        for i, p, s in zip(prompt_index, prompts, seeds, strict=True)
    ]
    missing = [j for j, f in enumerate(files) if not f.is_file()]
    if missing:
        files[0].parent.mkdir(parents=True, exist_ok=True)
    step = sampler.pop("batch_size")
    with tqdm(total=len(missing), desc=model, unit="img", disable=not missing) as bar:
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            new = generate_seeded(
                pipe, [prompts[j] for j in chunk], [seeds[j] for j in chunk], batch_size=step,
                desc=model, progress=False, **sampler,
            )  # fmt: skip
            # saved per chunk: resumable. Written under another name, then renamed: a run
            # killed mid-write leaves no half-written PNG to be taken for a saved image
            for j, image in zip(chunk, to_pil_images(new), strict=True):
                part = files[j].with_name(files[j].name + ".part")
                image.save(part, format="PNG")
                part.replace(files[j])
            bar.update(len(chunk))
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files]
    return torch.stack(images).permute(0, 3, 1, 2).float() / 255, len(missing)


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
    _sync_settings(
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
                "base_image": _image_file("base", i, texts[j], s),
                "tuned_image": _image_file("tuned", i, texts[j], s),
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
