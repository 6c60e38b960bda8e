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
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path


class DisplacementWarning(UserWarning):
    """The chosen likelihood fell while the preference margin rose."""


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
        if resume and start_file is not None and start_file.is_file():
            saved = json.loads(start_file.read_text())
            self.start = (float(saved["score_chosen"]), float(saved["score_rejected"]))
        self.fired_at: int | None = None

    @property
    def start_keys(self) -> tuple[str, str]:
        return f"{self.pair}/score_chosen", f"{self.pair}/score_rejected"

    def set_start(self, chosen: float, rejected: float, write: bool = True) -> None:
        """The reference-free baseline: the starting model's mean scores on the first batch."""
        self.start = (chosen, rejected)
        if write and self.start_file is not None:
            self.start_file.parent.mkdir(parents=True, exist_ok=True)
            self.start_file.write_text(
                json.dumps({"score_chosen": chosen, "score_rejected": rejected}) + "\n"
            )

    def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        p = self.pair
        if f"{p}/chosen_minus_ref" in metrics:
            chosen = metrics[f"{p}/chosen_minus_ref"]
            rejected = metrics[f"{p}/rejected_minus_ref"]
        elif f"{p}/score_chosen" in metrics:
            now = (metrics[f"{p}/score_chosen"], metrics[f"{p}/score_rejected"])
            if self.start is None:  # a run resumed from before the baseline was kept
                self.start = now
            chosen, rejected = now[0] - self.start[0], now[1] - self.start[1]
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
                f"by {-chosen:.3g} nats since the start (alarm at {self.threshold:g}) while the "
                f"margin rose by {margin:.3g} (rejected {rejected:+.3g}). DPO is lowering what "
                "it should raise (Razin et al.); look for near-identical pairs with `mmalign "
                "data diagnose DATA --model MODEL --filter ln_ches:keep_lowest=0.05`, lower the "
                "learning rate, or add an SFT term (rpo). Set vlm.displacement_alarm: null to "
                "silence this.",
                DisplacementWarning,
                stacklevel=2,
            )
        return out
