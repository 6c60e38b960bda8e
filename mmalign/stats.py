"""Small statistics shared across layers (the toy world's model cards and the evaluation)."""

from __future__ import annotations

import torch

BOOTSTRAP = 2000


def bootstrap_ci(
    values: torch.Tensor,
    seed: int = 0,
    draws: int = BOOTSTRAP,
    weights: torch.Tensor | None = None,
) -> list[float]:
    """95% percentile-bootstrap interval of the mean of `values` [N] (one per prompt), from
    `draws` resamples. With `weights` [N] (a prompt's image count) each resample's statistic is
    the weighted mean sum(w * v) / sum(w): the pooled mean over images, resampled by prompt."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, values.numel(), (draws, values.numel()), generator=gen)
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    if weights is None:
        return torch.quantile(values.double()[idx].mean(1), q).tolist()
    w = weights.double()[idx]
    return torch.quantile((values.double()[idx] * w).sum(1) / w.sum(1), q).tolist()
