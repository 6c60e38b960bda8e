"""toy-sd (or toy-flow) samples for the image kinds that label the model's own images (pairs,
style, users)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .common import quantise

SD3 = "StableDiffusion3Pipeline"  # toy-flow's class


def toy_sd_pipeline(model: Any):
    """A loaded toy pipeline from `model`: a folder, a pipeline, or None for the shipped toy-sd.
    A folder saved as an SD3 pipeline (toy-flow) loads as one."""
    from ..models.flow.sampling import load_pipeline as load_flow
    from ..models.sd.sampling import load_pipeline
    from ..paths import model_path

    if model is None:
        model = model_path("sd")
    if not isinstance(model, str | Path):
        return model
    index = Path(model) / "model_index.json"
    if index.is_file() and json.loads(index.read_text()).get("_class_name") == SD3:
        return load_flow(model)
    return load_pipeline(model)


def toy_model_name(pipe) -> str:
    """`toy-flow` for an SD3 pipeline, else `toy-sd` (progress bars, row sources)."""
    return "toy-flow" if type(pipe).__name__ == SD3 else "toy-sd"


def _sampler(pipe):
    """toy-sd's or toy-flow's `sample` (toy-flow's sets its T5 length)."""
    from ..models.flow.sampling import sample as sample_flow
    from ..models.sd.sampling import sample

    return sample_flow if type(pipe).__name__ == SD3 else sample


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
    """Samples of `texts`, the i-th drawn with seed `seed + i` whatever the batching."""
    sample = _sampler(pipe)
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
    second_texts: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two toy-sd samples of each of `texts` (seeds `seed + i` and `seed + len(texts) + i`):
    the two candidates of a pair that a reward labels. `second_texts`: draw the second
    candidate of pair i from `second_texts[i]` instead (the same seeds)."""
    second = list(texts if second_texts is None else second_texts)
    if len(second) != len(texts):
        raise ValueError(f"second_texts: {len(second)} captions for {len(texts)} pairs")
    both = model_images(
        pipe,
        list(texts) + second,
        seed,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    return both[: len(texts)], both[len(texts) :]
