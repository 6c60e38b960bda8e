"""The learning-rate schedule both toy builders train with."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1, then cosine to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
