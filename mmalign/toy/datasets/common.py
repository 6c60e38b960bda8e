"""What every toy data set builder shares: the `Built` result, seeded random streams, 8-bit
quantised renders, reward labelling (ties, label noise) and `finish`, which writes the pairs,
the Pick-a-Pic copy, the dense set and summary.json."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...data.pickapic import write_pickapic
from ...data.schema import FIELDS, Kind, write_pairs
from ...words import plural
from ..render import render_batch
from ..world import ToyPrompt

BUILT = ("pairs", "pickapic", "dense", "summary.json")  # what a build writes (and replaces)
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


def earlier_build(out: Path) -> str | None:
    """What an earlier build left in folder `out` that a build would replace, in words ("a toy
    'vqa' dataset of 4 rows, pairs, summary.json"); None where there is none."""
    found = [name for name in BUILT if (out / name).exists()]
    if not found:
        return None
    try:
        summary = json.loads((out / "summary.json").read_text())
        what = f"a toy '{summary['kind']}' dataset of {plural(int(summary['rows']), 'row')}, "
    except (OSError, ValueError, KeyError, TypeError):  # no summary, or not one of ours
        what = ""
    return f"{what}{', '.join(found)}"


def stream_seed(seed: int, *salt: object) -> int:
    """A seed for one random stream of a build: streams never share draws."""
    key = ":".join(map(str, (seed, *salt))).encode()
    return int(hashlib.sha256(key).hexdigest()[:12], 16)


def stream_generator(seed: int, *salt: object) -> torch.Generator:
    """A generator seeded for one random stream of a build (see `stream_seed`)."""
    return torch.Generator().manual_seed(stream_seed(seed, *salt))


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Round to what a PNG stores, so stored images score exactly as the labels say."""
    return (images.float().clamp(0, 1) * 255).round() / 255


def render_mixed(prompts: Sequence[ToyPrompt], styles: Sequence[str], gen: torch.Generator):
    """Jittered renders [B,3,32,32], each prompt in its own style."""
    images = torch.empty(len(prompts), 3, IMAGE_SIZE, IMAGE_SIZE)
    for style in dict.fromkeys(styles):
        idx = [i for i, s in enumerate(styles) if s == style]
        images[idx] = render_batch([prompts[i] for i in idx], IMAGE_SIZE, style, jitter=gen)
    return quantise(images)


def label_pair(
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


def check_ties(ties: str, label_noise: float) -> None:
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}")
    if not 0 <= label_noise < 0.5:
        raise ValueError(f"label_noise is a flip rate in [0, 0.5), got {label_noise}")


def _swap(row: dict[str, Any]) -> None:
    for a, b in (("chosen", "rejected"), ("chosen_model", "rejected_model")):
        row[a], row[b] = row.get(b), row.get(a)


def flip_labels(rows: list[dict[str, Any]], rate: float, seed: int) -> dict[str, Any]:
    """Swap chosen and rejected in round(rate * decided) seeded rows (ties have nothing to
    flip), as noisy annotators would; the summary records which rows."""
    decided = [i for i, r in enumerate(rows) if r["label"] == 1.0]
    k = round(rate * len(decided))
    flipped = sorted(random.Random(stream_seed(seed, "label-noise")).sample(decided, k))
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


def left_out(built: Built) -> tuple[dict[str, int], dict[str, int]]:
    """(`skipped`, `ties`) of a build, as a training run records its pairs
    (`data.run_record.pairs_record`): candidates left out by reason, ties apart, and `ties`:
    `dropped` (rewards tied under `ties: drop`) and `kept` (rows labelled 0.5, `ties: keep`).
    A tie is an outcome of the labelling, not a candidate that could not be made."""
    skipped = {reason: n for reason, n in built.skipped.items() if reason != "tie"}
    kept = sum(1 for r in built.rows if r.get("label") is not None and float(r["label"]) == 0.5)
    return skipped, {"dropped": built.skipped.get("tie", 0), "kept": kept}


def finish(
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
    """Write pairs (+ Pick-a-Pic, + dense) and summary.json; return the summary (`skipped`
    and `ties` apart: `left_out`)."""
    skipped, ties = left_out(built)
    if not built.rows:
        raise ValueError(
            f"{kind}: no rows left to write (skipped: {skipped}; ties dropped: {ties['dropped']})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in BUILT:  # a rebuild replaces what a build wrote (summary.json: written below)
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
        "skipped": skipped,
        "ties": ties,
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


def options_of(arguments: dict[str, Any]) -> dict[str, Any]:
    """A builder's arguments as JSON for the summary (a loaded pipeline by its class name)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v if isinstance(v, int | float | str | bool | None) else type(v).__name__

    return {k: plain(v) for k, v in arguments.items() if k != "out_dir"}
