"""Win rates of a tuned model over its base: same prompts, same seeds, same sampler.

For every scorer, prompt i is a win for the tuned model if its image scores higher than the
base's image for the same prompt and seed (METHODS.md section 4); an exact tie counts as half
a win. The 95% interval is a percentile bootstrap over prompts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..rewards import get_scorer
from .grid import image_grid

BOOTSTRAP = 10_000
GRID_ROWS = 16


def win_stats(base: torch.Tensor, tuned: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Win rate (ties count half) with a 95% bootstrap CI, and both models' mean and median."""
    base, tuned = base.double(), tuned.double()
    outcome = (tuned > base).double() + 0.5 * (tuned == base).double()
    n = outcome.numel()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (BOOTSTRAP, n), generator=gen)
    boot = outcome[idx].mean(dim=1)
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {
        "win_rate": float(outcome.mean()),
        "ci95": [lo, hi],
        "base_mean": float(base.mean()),
        "tuned_mean": float(tuned.mean()),
        "base_median": float(base.median()),
        "tuned_median": float(tuned.median()),
        "n": n,
        "wins": int((tuned > base).sum()),
        "ties": int((tuned == base).sum()),
        "losses": int((tuned < base).sum()),
    }


@torch.no_grad()
def generate(
    pipe,
    prompts: Sequence[str],
    *,
    seed: int,
    steps: int,
    guidance: float,
    batch_size: int,
    resolution: int | None = None,
    desc: str = "generate",
) -> torch.Tensor:
    """Images [N,3,H,W] in [0,1]; prompt i always uses generator seed `seed + i`."""
    device = pipe.unet.device
    out = []
    size = {"height": resolution, "width": resolution} if resolution else {}
    with tqdm(total=len(prompts), desc=desc, unit="img") as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            gens = [
                torch.Generator(device).manual_seed(seed + start + i) for i in range(len(chunk))
            ]
            images = pipe(
                chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                output_type="pt", **size,
            ).images  # fmt: skip
            out.append(images.float().cpu())
            bar.update(len(chunk))
    return torch.cat(out)


def _pil(images: torch.Tensor):
    from PIL import Image

    arrays = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arrays]


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
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate with both pipelines, score, write `results.json` and `grid.png` in out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    loaded = [get_scorer(name) for name in scorers]  # fail on a bad name before generating
    kwargs = {"seed": seed, "steps": steps, "guidance": guidance, "batch_size": batch_size}
    base = generate(base_pipe, prompts, desc="base", **kwargs)
    tuned = generate(tuned_pipe, prompts, desc="tuned", **kwargs)
    results: dict[str, Any] = {"scorers": {}}
    notes: list[list[str]] = [[], []]
    for name, scorer in zip(scorers, loaded, strict=True):
        b, t = scorer.score(base, prompts).cpu(), scorer.score(tuned, prompts).cpu()
        results["scorers"][name] = win_stats(b, t, seed)
        if not notes[0]:
            notes = [[f"{name} {x:.3f}" for x in b], [f"{name} {x:.3f}" for x in t]]
    k = min(GRID_ROWS, len(prompts))
    grid = image_grid(
        [_pil(base[:k]), _pil(tuned[:k])], ["base", "tuned"], list(prompts[:k]),
        [notes[0][:k], notes[1][:k]],
    )  # fmt: skip
    grid_path = out_dir / "grid.png"
    grid.save(grid_path)
    results.update(
        {
            "prompts": len(prompts),
            "seed": seed,
            "steps": steps,
            "guidance": guidance,
            "grid": str(grid_path),
            "seconds": time.perf_counter() - started,
            **(meta or {}),
        }
    )
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
