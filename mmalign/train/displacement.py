"""The likelihood-displacement alarm of the training loop (Razin et al., "Unintentional
Unalignment: Likelihood Displacement in Direct Preference Optimization", Section 3).

DPO raises the margin pi_c - pi_r, but it can do so while the chosen answer's own likelihood
falls (and probability mass moves to answers in neither set). On every logging step the loop
hands this alarm the pair metrics of the main pair; it logs the change of the chosen and
rejected summed log-likelihoods since the start of training and warns once when the chosen
one has fallen by more than `threshold` nats while the margin has risen.

The change since the start is the policy-minus-reference gap on the step's batch when the
objective has a reference (the reference is the starting model); without a reference it is
the batch mean against the first logged step's batch mean (a noisier estimate: other rows).
"""

from __future__ import annotations

import warnings


class DisplacementWarning(UserWarning):
    """The chosen likelihood fell while the preference margin rose."""


class DisplacementAlarm:
    """`update(step, metrics)` -> the displacement metrics to log (and warn once)."""

    def __init__(self, threshold: float | None, pair: str = "main"):
        self.threshold = threshold
        self.pair = pair
        self.start: tuple[float, float] | None = None  # reference-free: first logged means
        self.fired_at: int | None = None

    def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        p = self.pair
        if f"{p}/chosen_minus_ref" in metrics:
            chosen = metrics[f"{p}/chosen_minus_ref"]
            rejected = metrics[f"{p}/rejected_minus_ref"]
        elif f"{p}/score_chosen" in metrics:
            now = (metrics[f"{p}/score_chosen"], metrics[f"{p}/score_rejected"])
            if self.start is None:
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
