"""The win rate below a scorer's ceiling and its interval estimate the same thing.

`win_stats(..., ceiling=)` reports `below_ceiling.win_rate` pooled over the kept images, but
bootstrapped the unweighted mean of per-prompt rates: where prompts keep different numbers of
images the two differ, and the reported rate could lie outside its own 95% interval (0.8 with
an interval of 0.3-0.7 below). The bootstrap now resamples prompts and pools their images.
"""

from __future__ import annotations

import torch

from mmalign.eval.winrate import win_stats
from mmalign.stats import bootstrap_ci


def _uneven(prompts: int = 20, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts 0-9: four images below the ceiling, all won. Prompts 10-19: three base images
    at the ceiling (tied) and one below it, lost."""
    base, tuned = [], []
    for p in range(prompts):
        for j in range(k):
            if p < prompts // 2:
                base.append(0.5), tuned.append(0.9)
            elif j < k - 1:
                base.append(1.0), tuned.append(1.0)
            else:
                base.append(0.5), tuned.append(0.1)
    return torch.tensor(base), torch.tensor(tuned)


def test_below_ceiling_rate_lies_inside_its_interval():
    base, tuned = _uneven()
    c = win_stats(base, tuned, seeds_per_prompt=4, ceiling=1.0)["below_ceiling"]
    assert (c["n"], c["wins"], c["losses"], c["prompts"]) == (50, 40, 10, 20)
    assert c["win_rate"] == 0.8
    lo, hi = c["ci95"]
    assert lo < c["win_rate"] < hi


def test_weighted_bootstrap_is_the_pooled_mean_and_unweighted_is_unchanged():
    values = torch.tensor([1.0, 0.0, 1.0, 0.25], dtype=torch.float64)
    ones = torch.ones(4, dtype=torch.float64)
    assert bootstrap_ci(values, 3, 500, weights=ones) == bootstrap_ci(values, 3, 500)
    # weighted: the interval is around the pooled mean over images (0.6), not the plain 0.5625
    counts = torch.tensor([3.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    lo, hi = bootstrap_ci(values, 0, 2000, weights=counts)
    pooled = float((values * counts).sum() / counts.sum())
    assert lo < pooled < hi
