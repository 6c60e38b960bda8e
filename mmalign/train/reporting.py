"""What the training loop reports: per-step metrics beside the losses, the trackers and
their hyperparameters, the metrics file, the progress bar's postfix and validation images.

Kept apart from `loop.py` so the loop reads as the step and its bookkeeping.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch

from ..losses import PairScores
from .checkpoint import write_atomic


class Validates(Protocol):
    def validate(self, step: int) -> Any: ...


def pair_metrics(scores: dict[str, PairScores]) -> dict[str, torch.Tensor]:
    """Scores beside the losses (which report implicit and ranking accuracy): the policy's
    scores and the policy-minus-reference gaps that show the model moving while the loss
    looks flat (METHODS.md section 2). "chosen" is each pair's preferred side: a pair labelled
    below 0.5 (the rejected column preferred, as the losses train it) is read swapped, so the
    displacement alarm watches the answers training raises."""
    out = {}
    for name, s in scores.items():
        if s.label is not None:
            s = _preferred_first(s)
        out[f"{name}/score_chosen"] = s.chosen.detach().float().mean()
        out[f"{name}/score_rejected"] = s.rejected.detach().float().mean()
        if s.has_reference:
            assert s.ref_chosen is not None and s.ref_rejected is not None
            out[f"{name}/chosen_minus_ref"] = (s.chosen - s.ref_chosen).detach().float().mean()
            out[f"{name}/rejected_minus_ref"] = (
                (s.rejected - s.ref_rejected).detach().float().mean()
            )
    return out


def _preferred_first(s: PairScores) -> PairScores:
    """`s` with each pair labelled below 0.5 read swapped (its rejected column is preferred)."""
    assert s.label is not None
    flip = s.label < 0.5

    def side(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
        return None if first is None or second is None else torch.where(flip, second, first)

    return replace(
        s,
        chosen=side(s.chosen, s.rejected),
        rejected=side(s.rejected, s.chosen),
        ref_chosen=side(s.ref_chosen, s.ref_rejected),
        ref_rejected=side(s.ref_rejected, s.ref_chosen),
    )


def all_finite(scores: dict[str, PairScores]) -> torch.Tensor:
    """1.0 when every score of every pair is finite (checked on all processes alike), as one
    tensor on the device: read back once, not once per score tensor."""
    checks = [
        torch.isfinite(v.detach()).all()
        for s in scores.values()
        for v in (s.chosen, s.rejected, s.ref_chosen, s.ref_rejected)
        if v is not None
    ]
    return torch.stack(checks).all().float()


def check_trackers(names: list[str]) -> list[str]:
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {
        "tensorboard": is_tensorboard_available,
        "wandb": is_wandb_available,
        "trackio": is_trackio_available,
    }
    for name in names:
        if name not in available:
            raise ValueError(
                f"train.trackers: unknown tracker {name!r}; use {', '.join(available)}"
            )
        if not available[name]():
            raise ValueError(f"train.trackers: {name} is not installed (pip install {name})")
    return names


def log_image(accelerator, image, step: int) -> None:
    import numpy as np

    array = np.asarray(image.convert("RGB"))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"validation": array[None]}, step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({"validation": [array]}, step)


def rewrite_metrics(path: Path, upto: int) -> None:
    """On resume, keep the logged steps up to the checkpoint: the file stays one run. A line
    that is not JSON (cut short by the stop being resumed from) goes with the later ones."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if step <= upto:
            keep.append(line)
    write_atomic(path, "".join(line + "\n" for line in keep))


def validate(accelerator, recipe: Validates, out_dir: Path, step: int) -> None:
    """The recipe's validation image for `step`, saved under `validation/` and sent to the
    trackers by the main process; the others wait for it."""
    if accelerator.is_main_process:
        with accelerator.autocast():  # as the steps: float32 trained weights, bf16 encoders
            image = recipe.validate(step)
        if image is not None:
            folder = out_dir / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"step-{step:06d}.png")
            log_image(accelerator, image, step)
    accelerator.wait_for_everyone()


def progress_postfix(record: dict[str, float]) -> dict[str, str]:
    """The loss, and the first preference term's accuracy and margin. An `sft` term's are
    left out: it trains on the chosen side only (a dense reward head's terms have no rejected
    side at all), so its "accuracy" 0.00 and negative margin read as a failing run."""
    out = {"loss": f"{record['loss']:.4f}"}
    for key, value in record.items():
        if "/sft/" in key:
            continue
        if key.endswith("/accuracy") and "acc" not in out:
            out["acc"] = f"{value:.2f}"
        if key.endswith("/margin") and "margin" not in out:
            out["margin"] = f"{value:.3g}"
    return out


def flat_hparams(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tracker hyperparameters: nested keys joined by dots, lists as strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, int | float | str | bool) or v is None:
            out[key] = v if v is not None else "none"
        else:
            out[key] = json.dumps(v, default=str)
        if isinstance(out.get(key), float) and not math.isfinite(out[key]):
            out[key] = str(out[key])
    return out
