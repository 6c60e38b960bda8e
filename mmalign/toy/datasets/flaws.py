"""The dense-feedback kind `flaws` (RichHF-18K): clean versus flawed renders with heatmaps, and
the dense set of single images with their heatmaps and scores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ...data.schema import HEATMAP_CHANNELS, to_pil_image
from ..render import STYLES
from ..world import sample_prompts
from .common import (
    DENSE_SCORES,
    Built,
    finish,
    options_of,
    quantise,
    render_mixed,
    stream_generator,
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
    started, options = time.perf_counter(), options_of(locals())
    from ..flaws import dense_scores, inject_flaws

    prompts = sample_prompts(n, prompt_split, seed)
    texts = [p.text for p in prompts]
    styles = [
        STYLES[int(s)]
        for s in torch.randint(2, (n,), generator=stream_generator(seed, "flaw-style"))
    ]
    clean = render_mixed(prompts, styles, stream_generator(seed, "flaws"))
    flawed, artifact = inject_flaws(
        clean, stream_generator(seed, "inject"), per_image=flaws_per_image
    )
    flawed = quantise(flawed)
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
    return finish(
        "flaws", out_dir, built, n=n, seed=seed, split=split, options=options, started=started
    )
