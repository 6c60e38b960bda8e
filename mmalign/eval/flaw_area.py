"""Flawed area of toy samples: the measure behind ImageDoctor's claim that dense rewards remove
flaws (Guo et al. 2025), on the toy world's programmatic ground truth.

For the base and tuned images of a `mmalign eval winrate` folder (per_prompt.jsonl), the
flawed area of an image is the mean of its `toy:flaws` artifact heatmap (pixels its own clean
reading does not explain, `mmalign.toy.flaws.dense_scores`) and its plausibility that score.
Every interval (`ci95`) is the 95% percentile-bootstrap CI of a mean over prompts (as
`win_stats`: a prompt's images are averaged first, and the prompts are resampled,
`stats.BOOTSTRAP` times). Areas are shares of the image, printed in percent; a change of area
(tuned - base of one folder, or the tuned areas of two folders) is printed in percentage
points. Two folders made from the same prompts and seeds are compared paired: the difference
of their tuned areas, and of every score both were rated with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.schema import to_rgb
from ..stats import BOOTSTRAP, bootstrap_ci

# what every `ci95` of the report is, in the JSON and under the printed lines
INTERVAL = (
    f"each 95% CI (ci95) is a percentile bootstrap of the mean over prompts (a prompt's "
    f"images averaged first), {BOOTSTRAP} resamples of the prompts"
)


def _images(folder: Path, rows: list[dict[str, Any]], side: str) -> torch.Tensor:
    arrays = []
    for r in rows:
        with Image.open(folder / r[f"{side}_image"]) as im:
            arrays.append(np.array(to_rgb(im), dtype=np.float32) / 255)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def read_eval(folder: str | Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """(rows of per_prompt.jsonl, per image [N]: `{side}_area`, `{side}_plausibility`)."""
    from ..toy.flaws import dense_scores

    folder = Path(folder)
    path = folder / "per_prompt.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not an `mmalign eval winrate` folder")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} has no rows")
    out = {}
    prompts = [r["prompt"] for r in rows]
    for side in ("base", "tuned"):
        scores = dense_scores(_images(folder, rows, side), prompts)
        out[f"{side}_area"] = scores["artifact"].flatten(1).mean(1).double()
        out[f"{side}_plausibility"] = scores["plausibility"].double()
    return rows, out


def per_prompt(values: torch.Tensor, rows: list[dict[str, Any]]) -> torch.Tensor:
    """Mean per prompt (rows of one `prompt_index` averaged): the unit the bootstrap draws."""
    index = torch.tensor([int(r["prompt_index"]) for r in rows])
    _, group = torch.unique(index, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add(0, group, values)
    return sums / torch.bincount(group).double()


def flaw_report(folders: list[str | Path], seed: int = 0) -> dict[str, Any]:
    """Per folder: base and tuned flawed area and plausibility (mean, CI) and the paired change
    tuned - base; with two folders, their paired tuned-area difference (second - first)."""
    report: dict[str, Any] = {"interval": INTERVAL, "runs": {}}
    areas, keys, tables = [], [], []
    for folder in folders:
        rows, images = read_eval(folder)
        s = {k: per_prompt(v, rows) for k, v in images.items()}
        entry = {k: {"mean": float(v.mean()), "ci95": bootstrap_ci(v, seed)} for k, v in s.items()}
        change = s["tuned_area"] - s["base_area"]
        entry["area_change"] = {"mean": float(change.mean()), "ci95": bootstrap_ci(change, seed)}
        entry["images"], entry["prompts"] = len(rows), len(s["tuned_area"])
        report["runs"][str(folder)] = entry
        areas.append(s["tuned_area"])
        keys.append([(r["prompt"], r["seed"]) for r in rows])
        tables.append(rows)
    if len(folders) == 2:
        if keys[0] != keys[1]:
            raise ValueError("the two folders were not made from the same prompts and seeds")
        diff = areas[1] - areas[0]
        report["tuned_area_difference"] = {"of": f"{folders[1]} - {folders[0]}",
                                           "mean": float(diff.mean()),
                                           "ci95": bootstrap_ci(diff, seed)}  # fmt: skip
        report["tuned_score_difference"] = score_differences(tables[0], tables[1], seed)
    return report


def score_differences(first: list[dict[str, Any]], second: list[dict[str, Any]],
                      seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Per scorer both folders were scored with (per_prompt.jsonl `scores`): the paired
    difference of the tuned scores, second - first, per prompt, mean and bootstrap CI."""
    names = set(first[0].get("scores", {})) & set(second[0].get("scores", {}))
    out = {}
    for name in sorted(names):
        a = torch.tensor([r["scores"][name]["tuned"] for r in first], dtype=torch.float64)
        b = torch.tensor([r["scores"][name]["tuned"] for r in second], dtype=torch.float64)
        diff = per_prompt(b - a, first)
        out[name] = {"mean": float(diff.mean()), "ci95": bootstrap_ci(diff, seed)}
    return out


def _pp(mean: float, ci: list[float]) -> str:
    """A difference of two area shares in percentage points, with its CI."""
    return f"{100 * mean:+.2f} pp (95% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f} pp)"


def describe_flaws(report: dict[str, Any]) -> list[str]:
    """The lines `mmalign eval flaws` prints for `flaw_report`'s result: every interval named
    (95% bootstrap CI of the mean over prompts), a change of area in percentage points."""
    lines = []
    for folder, r in report["runs"].items():
        base, tuned, plaus = r["base_area"], r["tuned_area"], r["tuned_plausibility"]
        lines.append(
            f"{folder}: flawed area (share of the image, mean over prompts) "
            f"base {base['mean']:.2%} (95% CI {base['ci95'][0]:.2%}-{base['ci95'][1]:.2%}) "
            f"-> tuned {tuned['mean']:.2%} (95% CI {tuned['ci95'][0]:.2%}-{tuned['ci95'][1]:.2%}); "
            f"change tuned - base {_pp(r['area_change']['mean'], r['area_change']['ci95'])}, "
            "paired by prompt and seed; "
            f"tuned plausibility {plaus['mean']:.3f} (95% CI {plaus['ci95'][0]:.3f}-"
            f"{plaus['ci95'][1]:.3f}); {r['prompts']} prompts, {r['images']} images"
        )
    if "tuned_area_difference" in report:
        d = report["tuned_area_difference"]
        lines.append(
            f"{d['of']}: tuned flawed area {_pp(d['mean'], d['ci95'])}, paired by prompt and seed"
        )
        for name, r in report["tuned_score_difference"].items():
            lo, hi = r["ci95"]
            lines.append(
                f"  {name}: tuned score {r['mean']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}), "
                "paired by prompt and seed"
            )
    lines.append(report.get("interval", INTERVAL))
    return lines
