"""toy-sd samples for the image kinds that label the model's own images (pairs, style, users)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .common import quantise


def toy_sd_pipeline(model: Any):
    """A loaded toy-sd pipeline from `model`: a folder, a pipeline, or None for the shipped one."""
    from ..models.sd.sampling import load_pipeline

    if model is None:
        from ..paths import model_path

        model = model_path("sd")
    return load_pipeline(model) if isinstance(model, str | Path) else model


def model_images(
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
    from ..models.sd.sampling import sample

    out = []
    with tqdm(total=len(texts), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i : i + batch_size])
            out.append(sample(pipe, chunk, seed + i, steps=steps, guidance=guidance))
            bar.update(len(chunk))
    return quantise(torch.cat(out))


def sample_pairs(
    pipe,
    texts: Sequence[str],
    seed: int,
    *,
    steps: int,
    guidance: float,
    batch_size: int,
    progress: bool,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two toy-sd samples of each of `texts` (seeds `seed + i` and `seed + len(texts) + i`):
    the two candidates of a pair that a reward labels."""
    both = model_images(
        pipe,
        list(texts) + list(texts),
        seed,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    return both[: len(texts)], both[len(texts) :]
