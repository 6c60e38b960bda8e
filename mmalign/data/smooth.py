"""SmPO's smoothed preference labels from reward scores (Lu et al. ICML 2025, Sec. 4.1, Eq. 8).

Given a reward r for both images of every pair (PickScore in the paper), the rewards are
normalised with one global min-max over the whole dataset (both columns together),
`n = (r - r_min) / (r_max - r_min)`, each pair is ordered so the chosen image has the higher
reward (a pair the reward ranks the other way is swapped and counted), and the soft label is
`p = exp(n_c) / (exp(n_c) + exp(n_r))` = sigmoid(n_c - n_r), in [0.5, e / (1 + e) ~ 0.731].
A pair whose two rewards are equal gets p = 0.5: it is kept (and counted), and the SmPO loss
gives it no gradient, since its scale has the factor (2p - 1).

This module is the arithmetic only; scoring a dataset's images is mmalign/diffusion/smooth.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..words import plural

P_MAX = math.e / (1 + math.e)  # the largest label: n_c = 1, n_r = 0


@dataclass
class SoftLabels:
    """Per pair: `label` p, `swapped` (the reward ranks the pair the other way), the rewards
    after ordering (`reward_chosen` >= `reward_rejected`), and the normalisation's bounds."""

    label: torch.Tensor
    swapped: torch.Tensor
    reward_chosen: torch.Tensor
    reward_rejected: torch.Tensor
    low: float
    high: float

    @property
    def num_swapped(self) -> int:
        return int(self.swapped.sum())

    @property
    def num_ties(self) -> int:
        return int((self.reward_chosen == self.reward_rejected).sum())

    def histogram(self, bins: int = 10) -> list[tuple[float, float, int]]:
        """(low, high, count) of the labels over `bins` equal bins of [0.5, P_MAX]; the last
        bin is closed so p = P_MAX is counted."""
        edges = torch.linspace(0.5, P_MAX, bins + 1, dtype=torch.float64)
        index = torch.bucketize(self.label.double(), edges, right=True) - 1
        counts = torch.bincount(index.clamp(0, bins - 1), minlength=bins)
        return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(bins)]


def soft_labels(
    reward_chosen: torch.Tensor,
    reward_rejected: torch.Tensor,
    *,
    low: float | None = None,
    high: float | None = None,
) -> SoftLabels:
    """SmPO soft labels (Eq. 8) of pairs scored (`reward_chosen[i]`, `reward_rejected[i]`) in the
    data's current order. `low`/`high` override the min-max bounds (default: the rewards' own
    global min and max)."""
    rc = torch.as_tensor(reward_chosen, dtype=torch.float64).flatten()
    rr = torch.as_tensor(reward_rejected, dtype=torch.float64).flatten()
    if rc.shape != rr.shape:
        raise ValueError(f"{len(rc)} chosen rewards for {len(rr)} rejected ones")
    if len(rc) == 0:
        raise ValueError("no pairs to smooth: the dataset has no reward-scored pairs")
    bad = (~torch.isfinite(rc) | ~torch.isfinite(rr)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"the reward is not finite for pair(s) {bad[:10]}; nothing written")
    lo = float(torch.minimum(rc, rr).min()) if low is None else float(low)
    hi = float(torch.maximum(rc, rr).max()) if high is None else float(high)
    if not hi > lo:
        raise ValueError(
            f"every image has the same reward ({lo:g}): min-max normalisation is undefined and "
            "no pair has a preference"
        )
    swapped = rr > rc
    top, bottom = torch.maximum(rc, rr), torch.minimum(rc, rr)
    n_c, n_r = (top - lo) / (hi - lo), (bottom - lo) / (hi - lo)
    label = torch.sigmoid(n_c - n_r)  # exp(n_c) / (exp(n_c) + exp(n_r))
    return SoftLabels(label, swapped, top, bottom, lo, hi)


def describe(labels: SoftLabels, bins: int = 5) -> str:
    """Lines for a report: pairs, swapped, ties, bounds and the label histogram."""
    n = len(labels.label)
    lines = [
        f"{plural(n, 'pair')}: {labels.num_swapped} swapped (the reward ranks them the other "
        f"way), {plural(labels.num_ties, 'tie')} (p = 0.5: kept, no gradient)",
        f"reward min-max {labels.low:.6g} .. {labels.high:.6g}; "
        f"label mean {float(labels.label.mean()):.4f}",
        "label histogram:",
    ]
    for lo, hi, count in labels.histogram(bins):
        lines.append(f"  [{lo:.3f}, {hi:.3f}) {count:6d} {'#' * round(40 * count / max(n, 1))}")
    return "\n".join(lines)
