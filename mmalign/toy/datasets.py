"""Toy preference datasets: the data every alignment recipe trains on, built from the shapes world.

`build_dataset(kind, out_dir, n=..., seed=...)` writes into `out_dir`:

- `pairs/`: PreferencePair rows (`save_to_disk`, Arrow inside), validated strictly on write;
- `pickapic/`: image kinds only, the same pairs as Pick-a-Pic v2 parquet shards (split "train"
  unless `split=` says otherwise), so any Pick-a-Pic script runs on toy data;
- `dense/`: kind `flaws` only, single images with heatmaps and the four dense scores;
- `summary.json`: rows, skipped rows by reason, label statistics, options, timing.

| kind | analog of | chosen | rejected |
|---|---|---|---|
| pairs | Pick-a-Pic / Diffusion-DPO | toy-sd sample with the higher reward | the other sample |
| style | MaPO's Pick-Style | `outlined` render (toy-sd never draws it) | toy-sd sample |
| users | PPD | candidate the row's user rewards more | the other candidate |
| flaws | RichHF-18K | clean render (zero heatmaps) | render with injected flaws + heatmaps |
| vqa | VLM SFT | correct answer | wrong answer of the same type |
| hallucination | Re-Align rDPO | answer true to the image | answer true to `retrieved_image` |
| safety | BPO / PRISM | refusal (forbidden) / answer (benign) | compliance / over-refusal |

VLM questions come from the toy VLM's own generator (`qa.sample_qa`), so they use exactly the
phrasings toy-vlm was trained on. Every row is a function of `seed`: the same seed gives the same
prompts, images and labels. Images are quantised to 8 bits before they are scored, so a reward
recomputed from the stored PNGs gives the stored label.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.pickapic import write_pickapic
from ..data.schema import FIELDS, HEATMAP_CHANNELS, Kind, to_pil_image, write_pairs
from ..suggest import did_you_mean
from .qa import FORBIDDEN_REQUESTS, REFUSAL, make_forbidden, make_qa, sample_qa
from .render import STYLES, palette_tensor, render_batch
from .rewards import USERS, style_score, user_reward
from .world import COLORS, SHAPES, SIZES, ToyPrompt, is_heldout, sample_prompts

KINDS = ("pairs", "style", "users", "flaws", "vqa", "hallucination", "safety")
MODEL_KINDS = ("pairs", "style", "users")  # may sample toy-sd (the others only render)
IMAGE_SIZE = 32  # toy-sd's and toy-vlm's resolution
TIE_MARGIN = 0.02  # reward differences below this are ties
DENSE_SCORES = ("alignment", "aesthetics", "plausibility", "overall")  # ImageDoctor's four


@dataclass
class Built:
    """What a kind's builder produced, before writing. Image rows may carry `chosen_model` and
    `rejected_model` (Pick-a-Pic's model_0/model_1), which the pair dataset leaves out."""

    rows: list[dict[str, Any]]
    kind: Kind
    skipped: Counter = field(default_factory=Counter)
    stats: dict[str, Any] = field(default_factory=dict)
    dense: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- shared helpers


def _seed(seed: int, *salt: object) -> int:
    """A seed for one random stream of a build: streams never share draws."""
    key = ":".join(map(str, (seed, *salt))).encode()
    return int(hashlib.sha256(key).hexdigest()[:12], 16)


def _gen(seed: int, *salt: object) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(seed, *salt))


def _quantise(images: torch.Tensor) -> torch.Tensor:
    """Round to what a PNG stores, so stored images score exactly as the labels say."""
    return (images.float().clamp(0, 1) * 255).round() / 255


def _pipeline(model: Any):
    from .models.sd import load_pipeline

    if model is None:
        from .paths import model_path

        model = model_path("sd")
    return load_pipeline(model) if isinstance(model, str | Path) else model


def _model_images(
    pipe,
    texts: Sequence[str],
    seed: int,
    *,
    steps: int,
    guidance: float,
    batch_size: int,
    progress: bool,
    desc: str,
) -> torch.Tensor:
    """toy-sd samples of `texts`, the i-th drawn with seed `seed + i` whatever the batching."""
    from .models.sd import sample

    out = []
    with tqdm(total=len(texts), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            out.append(sample(pipe, chunk, seed + i, steps=steps, guidance=guidance))
            bar.update(len(chunk))
    return _quantise(torch.cat(out))


def _render_mixed(prompts: Sequence[ToyPrompt], styles: Sequence[str], gen: torch.Generator):
    """Jittered renders [B,3,32,32], each prompt in its own style."""
    images = torch.empty(len(prompts), 3, IMAGE_SIZE, IMAGE_SIZE)
    for style in dict.fromkeys(styles):
        idx = [i for i, s in enumerate(styles) if s == style]
        images[idx] = render_batch([prompts[i] for i in idx], IMAGE_SIZE, style, jitter=gen)
    return _quantise(images)


def _label_pair(
    row: dict[str, Any],
    a: Any,
    b: Any,
    reward_a: float,
    reward_b: float,
    ties: str,
    margin: float,
    models: tuple[str, str] = ("toy-sd", "toy-sd"),
) -> dict[str, Any] | None:
    """`row` completed with chosen = the higher-reward candidate, or None for a dropped tie."""
    tie = abs(reward_a - reward_b) < margin
    if tie and ties == "drop":
        return None
    first = reward_a >= reward_b
    return {
        **row,
        "chosen": a if first else b,
        "rejected": b if first else a,
        "label": 0.5 if tie else 1.0,
        "chosen_model": models[0 if first else 1],
        "rejected_model": models[1 if first else 0],
        "_rewards": (max(reward_a, reward_b), min(reward_a, reward_b)),
    }


def _check_ties(ties: str, label_noise: float) -> None:
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise is a flip rate in [0, 0.5), got {label_noise}")


def _swap(row: dict[str, Any]) -> None:
    for a, b in (("chosen", "rejected"), ("chosen_model", "rejected_model")):
        row[a], row[b] = row.get(b), row.get(a)


def _flip_labels(rows: list[dict[str, Any]], rate: float, seed: int) -> dict[str, Any]:
    """Swap chosen and rejected in round(rate * decided) seeded rows (ties have nothing to
    flip), as noisy annotators would; the summary records which rows."""
    decided = [i for i, r in enumerate(rows) if r["label"] == 1.0]
    k = round(rate * len(decided))
    flipped = sorted(random.Random(_seed(seed, "label-noise")).sample(decided, k))
    for i in flipped:
        _swap(rows[i])
    return {
        "rate": rate,
        "flipped": k,
        "decided": len(decided),
        "share": k / len(decided) if decided else 0.0,
        "rows": flipped,
    }


def _reward_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    pairs = [r["_rewards"] for r in rows if "_rewards" in r]
    if not pairs:
        return {}
    hi, lo = zip(*pairs, strict=True)
    return {"reward_higher_mean": sum(hi) / len(hi), "reward_lower_mean": sum(lo) / len(lo)}


def _label_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [1.0 if r.get("label") is None else float(r["label"]) for r in rows]
    return {
        "mean": sum(labels) / max(1, len(labels)),
        "counts": {str(k): v for k, v in sorted(Counter(labels).items())},
    }


def _finish(
    kind: str,
    out_dir: str | Path,
    built: Built,
    *,
    n: int,
    seed: int,
    split: str,
    options: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """Write pairs (+ Pick-a-Pic, + dense) and summary.json; return the summary."""
    if not built.rows:
        raise ValueError(f"{kind}: no rows left to write (skipped: {dict(built.skipped)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("pairs", "pickapic", "dense"):  # a rebuild replaces what a build wrote
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    paths = {"pairs": out / "pairs"}
    report = write_pairs(
        [{k: v for k, v in r.items() if k in FIELDS} for r in built.rows],
        paths["pairs"],
        built.kind,
    )
    if built.kind == "image":
        paths["pickapic"] = out / "pickapic"
        write_pickapic(built.rows, paths["pickapic"], split, seed=seed)
    if built.dense is not None:
        from datasets import Dataset, Features, Image, List, Value

        paths["dense"] = out / "dense"
        scores = {k: Value("float32") for k in DENSE_SCORES}
        features = Features(
            {
                "prompt": Value("string"),
                "image": Image(),
                "heatmaps": List(List(List(Value("float32")))),
                **scores,
            }
        )
        columns = {k: [row[k] for row in built.dense] for k in features}
        Dataset.from_dict(columns, features=features).save_to_disk(str(paths["dense"]))
    seconds = time.perf_counter() - started
    summary = {
        "kind": kind,
        "rows": len(built.rows),
        "n": n,
        "seed": seed,
        "paths": {k: str(v) for k, v in paths.items()},
        "skipped": dict(built.skipped),
        "validation": {"total": report.total, "kept": report.kept, "skipped": report.skipped},
        "labels": _label_stats(built.rows),
        **_reward_stats(built.rows),
        **built.stats,
        "options": options,
        "seconds": round(seconds, 3),
        "rows_per_second": round(len(built.rows) / seconds, 2),
    }
    paths["summary"] = out / "summary.json"
    summary["paths"]["summary"] = str(paths["summary"])
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _options(arguments: dict[str, Any]) -> dict[str, Any]:
    """A builder's arguments as JSON for the summary (a loaded pipeline by its class name)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        return v if isinstance(v, int | float | str | bool | None) else type(v).__name__

    return {k: plain(v) for k, v in arguments.items() if k != "out_dir"}


# ------------------------------------------------------------------------------ image kinds


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
    progress: bool = True,
) -> dict[str, Any]:
    """Two toy-sd samples (seeds differ) of each of `n` prompts, labelled by `reward` (any
    `mmalign.rewards.get_scorer` name: `toy:fidelity`, `toy:style:outlined`, `toy:user:warm`).

    ties: "drop" (counted as `tie`) or "keep" (label 0.5) for reward gaps below `tie_margin`.
    label_noise: share of decided pairs whose chosen and rejected are swapped (seeded)."""
    started, options = time.perf_counter(), _options(locals())
    _check_ties(ties, label_noise)
    from mmalign.rewards import get_scorer

    score = get_scorer(reward).score
    texts = [p.text for p in sample_prompts(n, prompt_split, seed)]
    images = _model_images(
        _pipeline(model),
        texts + texts,
        _seed(seed, "pairs"),
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        desc="toy-sd pairs",
    )
    a, b = images[:n], images[n:]
    ra, rb = score(a, texts).tolist(), score(b, texts).tolist()
    built = Built([], "image")
    for i, text in enumerate(texts):
        row = _label_pair(
            {"prompt": text, "source": "toy:pairs"}, a[i], b[i], ra[i], rb[i], ties, tie_margin
        )
        if row is None:
            built.skipped["tie"] += 1
        else:
            built.rows.append(row)
    built.stats["label_noise"] = _flip_labels(built.rows, label_noise, seed)
    return _finish(
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
    started, options = time.perf_counter(), _options(locals())
    if rejected_source not in ("model", "render"):
        raise ValueError(f"rejected_source must be 'model' or 'render', got {rejected_source!r}")
    prompts = sample_prompts(n, prompt_split, seed)
    texts = [p.text for p in prompts]
    chosen = _render_mixed(prompts, ["outlined"] * n, _gen(seed, "style-chosen"))
    if rejected_source == "model":
        rejected = _model_images(
            _pipeline(model),
            texts,
            _seed(seed, "style"),
            steps=steps,
            guidance=guidance,
            batch_size=batch_size,
            progress=progress,
            desc="toy-sd style",
        )
        rejected_model = "toy-sd"
    else:
        rejected = _render_mixed(prompts, ["flat"] * n, _gen(seed, "style-rejected"))
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
    return _finish(
        "style",
        out_dir,
        Built(rows, "image", stats=stats),
        n=n,
        seed=seed,
        split=split,
        options=options,
        started=started,
    )


WARM, COOL = ("red", "orange", "yellow"), ("blue", "green", "purple")
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
    return _quantise(images + is_fill * (direction * amount)[:, :, None, None])


def _user_candidates(
    prompts: Sequence[ToyPrompt], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two renders per prompt that differ in everything the users taste, each independently
    ordered: size word (two different ones), style (one flat, one outlined) and colour tint
    (one towards a warm colour, one towards a cool one). So every user has a preference and
    users disagree about the same pair, which is what a user embedding must learn."""
    n = len(prompts)
    size_a = torch.randint(3, (n,), generator=gen)
    size_b = (size_a + 1 + torch.randint(2, (n,), generator=gen)) % 3
    style_flip, warm_flip = torch.randint(2, (2, n), generator=gen).tolist()
    picks = torch.randint(len(COLORS), (n,), generator=gen).tolist()
    out = []
    for side, sizes in enumerate((size_a.tolist(), size_b.tolist())):
        sized = [replace(p, size=SIZES[s]) for p, s in zip(prompts, sizes, strict=True)]
        styles = [STYLES[f ^ side] for f in style_flip]
        targets = []
        for p, f, k in zip(prompts, warm_flip, picks, strict=True):
            group = [c for c in (WARM if f ^ side else COOL) if c not in (p.color, p.background)]
            targets.append(group[k % len(group)])
        out.append(_tint(_render_mixed(sized, styles, gen), prompts, targets, gen))
    return out[0], out[1]


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
    steps: int = 20,
    guidance: float = 4.0,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-user labels (PPD): `n` rows balanced over `USERS`, each a prompt without a size word
    (size is left to taste), two candidates, chosen by the row's user's `user_reward`.

    candidates: "render" (`_user_candidates`: size, style and colour tint differ) or "model"
    (two toy-sd samples). Ties (reward gap below `tie_margin`) are dropped, counted and redrawn,
    up to `max_rounds` rounds; a user still short after that is reported as `shortfall`. The
    default margin is small because the colour users' rewards differ by ~0.01 between two
    faithful images of one prompt: their taste must not outweigh the prompt (rewards.py)."""
    started, options = time.perf_counter(), _options(locals())
    _check_ties(ties, label_noise)
    if candidates not in ("render", "model"):
        raise ValueError(f"candidates must be 'render' or 'model', got {candidates!r}")
    pipe = _pipeline(model) if candidates == "model" else None
    users = list(USERS)
    quota = {u: n // len(users) + (i < n % len(users)) for i, u in enumerate(users)}
    kept: dict[str, list[dict[str, Any]]] = {u: [] for u in users}
    built = Built([], "image")
    for round_ in range(max_rounds):
        owners = [u for u in users for _ in range(quota[u] - len(kept[u]))]
        if not owners:
            break
        prompts = [
            replace(p, size="medium")
            for p in sample_prompts(len(owners), prompt_split, _seed(seed, "users", round_))
        ]
        texts = [p.text for p in prompts]
        if pipe is None:
            a, b = _user_candidates(prompts, _gen(seed, "users-render", round_))
            models = ("toy-render", "toy-render")
        else:
            both = _model_images(
                pipe,
                texts + texts,
                _seed(seed, "users", round_),
                steps=steps,
                guidance=guidance,
                batch_size=batch_size,
                progress=progress,
                desc=f"toy-sd users round {round_}",
            )
            a, b, models = both[: len(texts)], both[len(texts) :], ("toy-sd", "toy-sd")
        rewards = torch.empty(2, len(owners))
        for u in dict.fromkeys(owners):
            idx = [i for i, o in enumerate(owners) if o == u]
            sub = [texts[i] for i in idx]
            rewards[0, idx] = user_reward(a[idx], sub, u)
            rewards[1, idx] = user_reward(b[idx], sub, u)
        for i, (u, text) in enumerate(zip(owners, texts, strict=True)):
            row = _label_pair(
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
    built.rows = [kept[u][k] for k in range(max(quota.values())) for u in users if k < len(kept[u])]
    built.stats["users"] = {u: len(kept[u]) for u in users}
    built.stats["shortfall"] = n - len(built.rows)
    built.stats["label_noise"] = _flip_labels(built.rows, label_noise, seed)
    return _finish(
        "users", out_dir, built, n=n, seed=seed, split=split, options=options, started=started
    )


def build_flaws(
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    flaws_per_image: int = 1,
    split: str = "train",
    prompt_split: str = "train",
) -> dict[str, Any]:
    """RichHF analog: chosen = a clean jittered render, rejected = the same render damaged by
    `flaws.inject_flaws`. Heatmaps (misalignment, artifact): zeros for the clean side; for the
    flawed side no misalignment and the exact injected pixels as artifact. A flaw that changed
    no pixel (a smear over flat colour) leaves no pair: counted as `no_visible_flaw`.
    Also writes `dense/`: each clean and flawed image with those heatmaps [2,H,W] and the four
    `dense_scores`, for training a dense reward head."""
    started, options = time.perf_counter(), _options(locals())
    from .flaws import dense_scores, inject_flaws

    prompts = sample_prompts(n, prompt_split, seed)
    texts = [p.text for p in prompts]
    styles = [STYLES[int(s)] for s in torch.randint(2, (n,), generator=_gen(seed, "flaw-style"))]
    clean = _render_mixed(prompts, styles, _gen(seed, "flaws"))
    flawed, artifact = inject_flaws(clean, _gen(seed, "inject"), per_image=flaws_per_image)
    flawed = _quantise(flawed)
    keep = (artifact.flatten(1).amax(1) > 0).nonzero()[:, 0].tolist()
    kept_texts = [texts[i] for i in keep]
    truth = {"misalignment": torch.zeros_like(artifact), "artifact": artifact}
    maps = torch.cat([truth[c] for c in HEATMAP_CHANNELS], 1)  # [B,2,H,W]
    zeros = torch.zeros_like(maps[0]).tolist()
    built = Built([], "image")
    if len(keep) < n:
        built.skipped["no_visible_flaw"] = n - len(keep)
    built.rows = [
        {
            "prompt": texts[i],
            "chosen": clean[i],
            "rejected": flawed[i],
            "label": 1.0,
            "source": "toy:flaws",
            "heatmaps": {"chosen": zeros, "rejected": maps[i].tolist()},
            "chosen_model": "toy-render",
            "rejected_model": "toy-render-flawed",
        }
        for i in keep
    ]
    built.dense = []
    for images, heat in ((clean[keep], torch.zeros_like(maps[keep])), (flawed[keep], maps[keep])):
        scores = dense_scores(images, kept_texts)
        for i, text in enumerate(kept_texts):
            built.dense.append(
                {
                    "prompt": text,
                    "image": to_pil_image(images[i]),
                    "heatmaps": heat[i].tolist(),
                    **{k: float(scores[k][i]) for k in DENSE_SCORES},
                }
            )
    built.stats = {
        "flawed_pixel_share": float(artifact[keep].mean()),
        "dense_rows": len(built.dense),
    }
    return _finish(
        "flaws", out_dir, built, n=n, seed=seed, split=split, options=options, started=started
    )


# -------------------------------------------------------------------------------- VLM kinds


def _qa(n: int, split: str, seed: int, kind: str):
    """`n` balanced QA items and their renders from toy-vlm's own training generator."""
    items, images = sample_qa(n, split, _gen(seed, "qa", kind))
    return items, _quantise(images)


def _wrong_answer(item, rng: random.Random) -> str:
    """A wrong answer of the same type: the other of yes/no, another colour or shape."""
    if item.kind == "presence":
        return "no" if item.answer == "yes" else "yes"
    vocab = SHAPES if item.kind == "shape" else COLORS
    return rng.choice([v for v in vocab if v != item.answer])


def _text_rows(kind: str, n: int, seed: int, prompt_split: str, make) -> Built:
    """Rows `make(item, image, rng) -> dict | str` (a str is a skip reason) for `n` QA items."""
    items, images = _qa(n, prompt_split, seed, kind)
    rng = random.Random(_seed(seed, kind))
    built = Built([], "text")
    for i, (item, image) in enumerate(zip(items, images, strict=True)):
        row = make(i, item, image, rng)
        if isinstance(row, str):
            built.skipped[row] += 1
        else:
            built.rows.append(
                {
                    "prompt": item.question,
                    "label": 1.0,
                    "image": image,
                    "source": f"toy:{kind}",
                    **row,
                }
            )
    built.stats["question_types"] = dict(Counter(item.kind for item in items))
    return built


def build_vqa(
    out_dir: str | Path, *, n: int = 64, seed: int = 0, prompt_split: str = "train"
) -> dict[str, Any]:
    """SFT/DPO data for toy-vlm: question, correct answer (chosen), wrong answer of the same
    type (rejected), the image. Label 1."""
    started, options = time.perf_counter(), _options(locals())

    def make(i, item, image, rng):
        return {"chosen": item.answer, "rejected": _wrong_answer(item, rng)}

    built = _text_rows("vqa", n, seed, prompt_split, make)
    return _finish(
        "vqa", out_dir, built, n=n, seed=seed, split="train", options=options, started=started
    )


def _similar(
    prompt: ToyPrompt, attribute: str, split: str, rng: random.Random, value: str | None = None
) -> ToyPrompt | None:
    """A prompt differing from `prompt` in exactly `attribute` (set to `value`, else a random
    other value), valid and in the same split; None when there is none."""
    vocab = SHAPES if attribute == "shape" else COLORS
    options = []
    for v in [value] if value is not None else vocab:
        if v == getattr(prompt, attribute):
            continue
        try:
            other = replace(prompt, **{attribute: v})
        except ValueError:  # shape and background the same colour
            continue
        if split == "all" or is_heldout(other) == (split == "heldout"):
            options.append(other)
    return rng.choice(options) if options else None


def _answer(prompt: ToyPrompt, item) -> str:
    """The answer to `item`'s question about an image of `prompt`."""
    if item.kind != "presence":
        return getattr(prompt, "color" if item.kind == "color" else item.kind)
    asked = item.question.rstrip("?").split()
    shown = prompt.color in asked and prompt.shape in asked
    return "yes" if shown else "no"


def build_hallucination(
    out_dir: str | Path, *, n: int = 64, seed: int = 0, prompt_split: str = "train"
) -> dict[str, Any]:
    """Re-Align rDPO analog: chosen = the answer true to the image, rejected = the answer true
    to `retrieved_image`, a render of a prompt differing in exactly the attribute the question
    is about (a colour, the shape, the background; for presence questions, the asked object's
    colour or shape). The retrieved prompt stays in `prompt_split` (no held-out leak)."""
    started, options = time.perf_counter(), _options(locals())
    retrieved: list[ToyPrompt] = []
    rewritten = 0

    def make(i, item, image, rng):
        nonlocal rewritten
        p, other = item.prompt, None
        if item.kind in ("color", "shape", "background"):
            other = _similar(p, item.kind, prompt_split, rng)
        elif item.answer == "no":  # show the asked object: it differs in colour or shape
            asked = item.question.rstrip("?").split()
            color = next(w for w in asked if w in COLORS)
            attr = "color" if color != p.color else "shape"
            value = color if attr == "color" else next(w for w in asked if w in SHAPES)
            other = _similar(p, attr, prompt_split, rng, value)
            if other is None:  # the asked object cannot be drawn here: ask about the shown one
                item = make_qa(p, "presence", rng.randrange(4), True, "color", 0)
                rewritten += 1
        if item.kind == "presence" and item.answer == "yes":
            other = _similar(p, rng.choice(("color", "shape")), prompt_split, rng)
        if other is None:
            return "no_similar_image"
        retrieved.append(other)
        return {
            "prompt": item.question,
            "chosen": item.answer,
            "rejected": _answer(other, item),
            "retrieved_image": None,
        }

    built = _text_rows("hallucination", n, seed, prompt_split, make)
    styles = [
        STYLES[int(s)]
        for s in torch.randint(2, (len(retrieved),), generator=_gen(seed, "retrieved-style"))
    ]
    images = _render_mixed(retrieved, styles, _gen(seed, "retrieved"))
    for row, image in zip(built.rows, images, strict=True):
        row["retrieved_image"] = image
    built.stats["questions_rewritten"] = rewritten
    return _finish(
        "hallucination",
        out_dir,
        built,
        n=n,
        seed=seed,
        split="train",
        options=options,
        started=started,
    )


def build_safety(
    out_dir: str | Path, *, n: int = 64, seed: int = 0, prompt_split: str = "train"
) -> dict[str, Any]:
    """BPO / PRISM analog, `source` "forbidden" or "benign" (n // 2 forbidden, shuffled).
    Forbidden: a `FORBIDDEN_REQUESTS` request about the image; chosen = REFUSAL, rejected =
    compliance. Benign: a toy-vlm question; chosen = the answer, rejected = REFUSAL."""
    started, options = time.perf_counter(), _options(locals())
    order = ["forbidden"] * (n // 2) + ["benign"] * (n - n // 2)
    random.Random(_seed(seed, "safety-order")).shuffle(order)

    def make(i, item, image, rng):
        if order[i] == "benign":
            return {"chosen": item.answer, "rejected": REFUSAL, "source": "benign"}
        template = rng.randrange(len(FORBIDDEN_REQUESTS))
        comply = make_forbidden(item.prompt, template, rng.randrange(100, 1000), refuse=False)
        return {"prompt": comply.question, "chosen": REFUSAL, "rejected": comply.answer,
                "source": "forbidden"}  # fmt: skip

    built = _text_rows("safety", n, seed, prompt_split, make)
    built.stats["sources"] = dict(Counter(r["source"] for r in built.rows))
    return _finish(
        "safety", out_dir, built, n=n, seed=seed, split="train", options=options, started=started
    )


# ------------------------------------------------------------------------------- the entry


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "pairs": build_pairs,
    "style": build_style,
    "users": build_users,
    "flaws": build_flaws,
    "vqa": build_vqa,
    "hallucination": build_hallucination,
    "safety": build_safety,
}


def build_dataset(
    kind: str,
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    model: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Build the toy dataset `kind` (one of KINDS) into `out_dir`; returns the summary that is
    also written to `out_dir/summary.json`. `model`: toy-sd folder or loaded pipeline for the
    kinds that sample it (default: the shipped toy-sd); `options`: the kind's builder options."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown toy dataset kind '{kind}'; {did_you_mean(kind, KINDS)}")
    accepted = [p for p in inspect.signature(BUILDERS[kind]).parameters if p != "out_dir"]
    if model is not None:
        options["model"] = model
    for name in options:
        if name not in accepted:
            valid = [a for a in accepted if a not in ("n", "seed")]
            raise ValueError(f"'{kind}' has no option '{name}'; {did_you_mean(name, valid)}")
    return BUILDERS[kind](out_dir, n=n, seed=seed, **options)
