"""Implicit-reward accuracy of a tuned diffusion model against its reference (Diffusion-DPO,
Wallace et al. 2024, Table 1's "implicit reward" accuracy: DPO-SDXL 72.0 on Pick-a-Pic v2
validation).

Diffusion-DPO's implicit reward of an image is beta * (ref_mse - mse) (METHODS.md section 2):
how much better the tuned model denoises it than the reference. A pair is ranked right when
the chosen image's implicit reward exceeds the rejected one's,
`(ref_mse_w - mse_w) - (ref_mse_l - mse_l) > 0`, estimated as the mean over `draws` (timestep,
noise) draws per pair with the training scorer (`DiffusionPairScorer`, no caption dropout).
beta > 0 does not change the sign, so it is left out. An exact tie of the implicit reward
(margin 0) counts half (`implicit_credit`), here and in `mmalign data diagnose`. Ties in the
labels (0.5) have no right order: they are left out and counted. A label is P(chosen
preferred): a pair labelled below 0.5 (a saved pair dataset's label 0, the rejected image won)
is scored with its two images swapped, so "chosen" is always the image the human preferred and
such a pair is not ranked backwards.

`score_pairs` also gives the tuned model's own ranking of each pair (Chen et al., "Preference
Learning Algorithms Do Not Learn Preference Rankings", Section 3, with Diffusion-DPO's stand-in
for the likelihood: the lower denoising error, -MSE, ranks higher), which `mmalign data
diagnose` reports per pair for diffusion data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..words import plural
from .accuracy import load_pairs


@dataclass
class PairScores:
    """Per kept pair (labelled ties left out): the model's scores (-MSE, mean over the draws)
    of the preferred ("chosen") and the other image, and the reference's when one was scored.
    `swapped` pairs were labelled below 0.5: their row's `rejected` image is "chosen" here.
    `prompts`: each kept pair's prompt, for the report of `mmalign data diagnose`."""

    kept: list[int]  # row indices in the data as loaded
    chosen: torch.Tensor
    rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    base: str | None
    ties: int
    report: Any
    swapped: int = 0
    prompts: list[str] = field(default_factory=list)

    def implicit_margin(self) -> torch.Tensor:
        """(ref_mse_w - mse_w) - (ref_mse_l - mse_l) per pair (needs the reference)."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("the implicit reward needs a reference")
        return (self.chosen - self.ref_chosen) - (self.rejected - self.ref_rejected)


def implicit_credit(margin: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 where the preferred side's implicit reward is higher (margin > 0), 0.5 on an
    exact tie, 0 below: the implicit accuracy is its mean."""
    return (margin > 0).double() + 0.5 * (margin == 0).double()


def score_pairs(
    tuned: str,
    data: str,
    *,
    base: str | None = None,
    reference: bool = True,
    draws: int = 4,
    batch_size: int = 16,
    max_rows: int | None = None,
    pickapic_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
    split: str = "train",
    key: str = "--tuned",
    base_key: str = "--base",
) -> PairScores:
    """Score every labelled, untied pair of `data` with `tuned` (a training output_dir, LoRA
    or pipeline folder) and, with `reference`, with its base: the same (timestep, noise) draws
    per pair for both, no caption dropout. key, base_key: the flags that named `tuned` and
    `base`, for messages."""
    from ..diffusion import load_pipeline, load_tuned
    from ..diffusion.data import PairImages, collate
    from ..diffusion.encode import Encoder
    from ..diffusion.recipe import run_info
    from ..diffusion.scorer import DiffusionPairScorer
    from ..rewards.common import pick_device

    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    base = base or (run_info(tuned) or {}).get("base")
    if reference and base is None:
        local = str(tuned).startswith(("/", ".", "~"))  # a path, not a name (toy:sd, a hub id)
        where = ": no such folder" if local and not Path(tuned).expanduser().exists() else ""
        raise ValueError(f"{base_key} (the base model) is needed unless {key} is a training "
                         f"output_dir ({tuned} is not one{where})")  # fmt: skip
    if base is not None:
        model = load_tuned(tuned, base, key=key, base_key=base_key)
    else:
        model = load_pipeline(tuned, key=key)
    dev = pick_device(device)
    model.pipe.to(dev)
    lora = any("lora_" in n for n, _ in model.unet.named_parameters())
    kind = "adapters" if lora else "none"
    # the size the run trained at (as the flow path below reads it), else the model's default
    resolution = int((run_info(tuned) or {}).get("resolution") or model.default_resolution)
    if hasattr(model.pipe, "transformer"):  # SD3 / FLUX: the flow scorer, as the run trained
        scorer, encoder, resolution = _flow_scorer(model, tuned, kind)
    else:
        scorer = DiffusionPairScorer(model, {}, reference=kind, caption_dropout=0.0)
        encoder = Encoder(model)
    if reference and not lora:  # a full fine-tune or another pipeline: the base's own denoiser
        scorer.reference = "copy"
        ref_net = load_pipeline(base).unet.to(dev).eval()
        if hasattr(model.pipe, "transformer"):
            scorer.reference_model = ref_net
        else:
            scorer.reference_unet = ref_net
    scorer.empty = encoder.empty()

    rows, report = load_pairs(data, pickapic_root=pickapic_root, max_rows=max_rows, split=split)
    labels = rows["label"] if "label" in rows.column_names else [None] * len(rows)
    keep = [i for i, v in enumerate(labels) if v is None or abs(float(v) - 0.5) > 1e-6]
    ties = len(rows) - len(keep)
    # the rejected image won where the label is below 0.5: score it as the chosen one
    swap = [labels[i] is not None and float(labels[i]) < 0.5 for i in keep]
    rows = rows.select(keep)
    if len(rows) == 0:
        raise ValueError(f"{data}: no labelled pairs without a tie")
    images = PairImages(rows, resolution)
    prompts = [str(p) for p in rows["prompt"]]  # every pair source has one (Pick-a-Pic: caption)
    model.unet.eval()
    sums: dict[str, list[torch.Tensor]] = {"c": [], "r": [], "rc": [], "rr": []}
    with torch.no_grad():
        for start in tqdm(range(0, len(rows), batch_size), desc="scoring pairs", unit="batch"):
            idx = list(range(start, min(start + batch_size, len(rows))))
            enc = encoder.encode(collate([_winner_first(images[i], swap[i]) for i in idx]), idx)
            enc = {k: v.to(dev) for k, v in enc.items()}
            total = {k: torch.zeros(len(idx), dtype=torch.float64) for k in sums}
            for d in range(draws):
                seeds = torch.tensor([seed * 1_000_003 + i * draws + d for i in idx])
                s = scorer(model.unet, enc, seeds, with_reference=reference)["main"]
                total["c"] += s.chosen.double().cpu()
                total["r"] += s.rejected.double().cpu()
                if reference:
                    assert s.ref_chosen is not None and s.ref_rejected is not None
                    total["rc"] += s.ref_chosen.double().cpu()
                    total["rr"] += s.ref_rejected.double().cpu()
            for k in sums:
                sums[k].append(total[k] / draws)
    got = {k: torch.cat(v) for k, v in sums.items()}
    return PairScores(keep, got["c"], got["r"], got["rc"] if reference else None,
                      got["rr"] if reference else None, base, ties, report,
                      swapped=sum(swap), prompts=prompts)  # fmt: skip


def _winner_first(item: dict[str, Any], swap: bool) -> dict[str, Any]:
    """A `PairImages` item with its two images (and their time ids) swapped when `swap`."""
    if not swap:
        return item
    return {**item, "pixels": item["pixels"].flip(0), "time_ids": item["time_ids"].flip(0),
            "label": 1 - item["label"]}  # fmt: skip


def _flow_scorer(model: Any, tuned: str, kind: str) -> tuple[Any, Any, int]:
    """`FlowPairScorer`, `FlowEncoder` and resolution with the training run's sigma settings,
    guidance, T5 length and resolution where `tuned` is a training output_dir."""
    from ..diffusion.flow import FlowPairScorer, FlowSettings
    from ..diffusion.flow_encode import FlowEncoder
    from ..diffusion.recipe import run_info

    run = run_info(tuned) or {}
    sigma = run.get("sigma") or {}
    settings = FlowSettings(
        sampling=sigma.get("sampling", "logit_normal"),
        logit_mean=sigma.get("logit_mean", 0.0),
        logit_std=sigma.get("logit_std", 1.0),
        mode_scale=sigma.get("mode_scale", 1.29),
        weighting=sigma.get("weighting", "none"),
        shift=sigma.get("shift"),
        guidance=sigma.get("guidance"),
    )
    scorer = FlowPairScorer(model, {}, reference=kind, settings=settings, caption_dropout=0.0)
    encoder = FlowEncoder(model, max_sequence_length=run.get("max_sequence_length"))
    return scorer, encoder, int(run.get("resolution") or model.default_resolution)


def implicit_accuracy(
    tuned: str,
    data: str,
    *,
    base: str | None = None,
    draws: int = 4,
    batch_size: int = 16,
    max_rows: int | None = None,
    pickapic_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
    split: str = "train",
    key: str = "--tuned",
) -> dict[str, Any]:
    """Accuracy of the implicit reward of `tuned` (a training output_dir, LoRA or pipeline
    folder) over its base on the labelled pairs of `data` (`split`: of a dataset folder)."""
    scores = score_pairs(tuned, data, base=base, draws=draws, batch_size=batch_size,
                         max_rows=max_rows, pickapic_root=pickapic_root, seed=seed,
                         device=device, split=split, key=key)  # fmt: skip
    margin = scores.implicit_margin()
    correct = implicit_credit(margin)
    return {
        "model": str(tuned),
        "base": str(scores.base),
        "data": data,
        "implicit_accuracy": float(correct.mean()),
        "pairs": len(margin),
        "draws": draws,
        "mean_margin": float(margin.mean()),
        "implicit_ties": int((margin == 0).sum()),
        "ties_left_out": scores.ties,
        "rejected_preferred": scores.swapped,
        "skipped": scores.report.num_skipped,
        "skip_reasons": dict(scores.report.skipped),
    }


def describe_implicit(result: dict[str, Any]) -> str:
    """The line `mmalign eval accuracy --model` prints for an `implicit_accuracy` result."""
    return (
        f"implicit reward of {result['model']} over {result['base']} on {result['data']}: "
        f"accuracy {result['implicit_accuracy']:.1%} ({plural(result['pairs'], 'pair')}, "
        f"{plural(result['draws'], 'draw')} each; {plural(result['ties_left_out'], 'tie')} left "
        f"out, {plural(result['skipped'], 'row')} skipped)"
    )
