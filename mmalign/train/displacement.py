"""The likelihood-displacement alarm of the training loop (Razin et al., "Unintentional
Unalignment: Likelihood Displacement in Direct Preference Optimization", Section 3).

DPO raises the margin pi_c - pi_r, but it can do so while the chosen answer's own likelihood
falls (and probability mass moves to answers in neither set). On every logging step the loop
hands this alarm the pair metrics of the main pair; it logs the change of the chosen and
rejected summed log-likelihoods since the start of training and warns once when the chosen
one has fallen by more than `threshold` nats while the margin has risen.

The change since the start is the policy-minus-reference gap on the step's batch when the
objective has a reference (the reference is the starting model). Without a reference it is the
batch mean against the mean of the first step's batch, scored before the first update (so the
starting model; kept in the run folder so a resumed run measures from the same start). That
estimate is noisier: a logged batch holds other rows than the first.

The kept baseline records its format (`BASELINE_VERSION`). One without it was written before
label-0 pairs were read preferred side first (reporting.pair_metrics), so its two sides may be
swapped for those rows; the starting model it scored is gone by then, so a resumed run cannot
recompute it. It re-measures from its own first batch instead, says so once
(`DisplacementBaselineWarning`) and keeps that baseline with its step.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

# 2: each pair's preferred side first (a label-0 pair's rejected column), and the step it was
# scored before; 1 (no "version" key): both columns as stored
BASELINE_VERSION = 2


class DisplacementWarning(UserWarning):
    """The chosen likelihood fell while the preference margin rose."""


class DisplacementBaselineWarning(UserWarning):
    """The kept baseline could not be used: the alarm measures from a later step."""


class DisplacementAlarm:
    """`update(step, metrics)` -> the displacement metrics to log (and warn once)."""

    def __init__(
        self,
        threshold: float | None,
        pair: str = "main",
        start_file: Path | None = None,
        resume: bool = False,
    ):
        self.threshold = threshold
        self.pair = pair
        self.start_file = start_file
        # reference-free: the starting model's means on the first batch (`set_start`), read
        # back from `start_file` when the run resumes
        self.start: tuple[float, float] | None = None
        self.start_step = 0  # the step the baseline was scored before (0: the starting model)
        self.stale: str | None = None  # why a kept baseline was not read back
        if resume and start_file is not None and start_file.is_file():
            saved = json.loads(start_file.read_text())
            if saved.get("version") == BASELINE_VERSION:
                self.start = (float(saved["score_chosen"]), float(saved["score_rejected"]))
                self.start_step = int(saved["step"])
            else:
                self.stale = (
                    f"{start_file} holds a baseline in format {saved.get('version', 1)}, "
                    f"not {BASELINE_VERSION}: written before label-0 pairs were read preferred "
                    "side first, its chosen and rejected means may mix the two sides"
                )
        self.fired_at: int | None = None

    @property
    def start_keys(self) -> tuple[str, str]:
        return f"{self.pair}/score_chosen", f"{self.pair}/score_rejected"

    def set_start(self, chosen: float, rejected: float, write: bool = True, step: int = 0) -> None:
        """The reference-free baseline: the mean scores of the model at step `step` (0: the
        starting model) on the next batch, before its update. `write`: keep it in `start_file`
        (and say why where a kept one was not used); the main process's part."""
        self.start, self.start_step = (chosen, rejected), step
        if write:
            self._say_stale(step)
        self.stale = None
        if write and self.start_file is not None:
            self.start_file.parent.mkdir(parents=True, exist_ok=True)
            saved = {"version": BASELINE_VERSION, "step": step, "score_chosen": chosen,
                     "score_rejected": rejected}  # fmt: skip
            self.start_file.write_text(json.dumps(saved) + "\n")

    def _say_stale(self, step: int) -> None:
        if self.stale is not None:
            warnings.warn(
                f"{self.stale}. The displacement alarm measures from the model at step {step} "
                f"instead (its scores on the next batch): displacement/* are changes since step "
                f"{step}, not since the start of training.",
                DisplacementBaselineWarning,
                stacklevel=3,
            )

    def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        p = self.pair
        if f"{p}/chosen_minus_ref" in metrics:
            chosen = metrics[f"{p}/chosen_minus_ref"]
            rejected = metrics[f"{p}/rejected_minus_ref"]
            since = "the start"  # the reference is the starting model
        elif f"{p}/score_chosen" in metrics:
            now = (metrics[f"{p}/score_chosen"], metrics[f"{p}/score_rejected"])
            if self.start is None:  # no baseline was set: this step's scores, taken before
                self._say_stale(step - 1)  # its update (so the model at step - 1)
                self.set_start(*now, write=False, step=max(step - 1, 0))
            assert self.start is not None
            chosen, rejected = now[0] - self.start[0], now[1] - self.start[1]
            since = f"step {self.start_step}" if self.start_step else "the start"
        else:
            return {}
        margin = chosen - rejected
        out = {"displacement/chosen": chosen, "displacement/rejected": rejected,
               "displacement/margin": margin}  # fmt: skip
        if (self.threshold is not None and self.fired_at is None
                and chosen < -self.threshold and margin > 0):  # fmt: skip
            self.fired_at = step
            warnings.warn(
                f"step {step}: likelihood displacement: the chosen answers' log-likelihood fell "
                f"by {-chosen:.3g} nats since {since} (alarm at {self.threshold:g}) while the "
                f"margin rose by {margin:.3g} (rejected {rejected:+.3g}). DPO is lowering what "
                "it should raise (Razin et al.); look for near-identical pairs with `mmalign "
                "data diagnose DATA --model MODEL --filter ln_ches:keep_lowest=0.05`, lower the "
                "learning rate, or add an SFT term (rpo). Set vlm.displacement_alarm: null to "
                "silence this.",
                DisplacementWarning,
                stacklevel=2,
            )
        return out
