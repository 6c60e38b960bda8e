"""The last stage both diffusion toy builders share: save the pipeline, measure it, record it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any


def save_and_measure(
    pipe: Any, out: Path, started: float, evaluate: Callable[..., dict], settings: Any
) -> dict:
    """Save `pipe` to `out`, evaluate it with the settings' sampler, and write
    `build_metrics.json` (the metrics, the build's seconds since `started`, the settings).
    The weights get the umask's permissions (safetensors 0.8 leaves them 0600): the toy models
    ship as package data, read by every user of an install."""
    from ...files import make_readable

    pipe.save_pretrained(out)
    make_readable(out)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(out, settings.eval_prompts, steps=settings.eval_steps,
                       guidance=settings.guidance_scale)  # fmt: skip
    metrics.update(train_seconds=train_seconds, settings=asdict(settings))
    (out / "build_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
