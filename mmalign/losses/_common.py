"""Small helpers shared by the loss functions: upcasting, lengths, metrics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .scores import PairScores


def f32(x: Tensor) -> Tensor:
    """Losses are computed in at least float32 (scores may arrive in bf16/fp16)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def log_ratios(s: PairScores) -> tuple[Tensor, Tensor]:
    """`lw = pi_c - ref_c`, `ll = pi_r - ref_r` (METHODS.md notation)."""
    assert s.ref_chosen is not None and s.ref_rejected is not None
    return f32(s.chosen) - f32(s.ref_chosen), f32(s.rejected) - f32(s.ref_rejected)


def lengths(s: PairScores) -> tuple[Tensor, Tensor]:
    """Completion lengths; a missing length means 1 (the score is already a mean)."""
    one = torch.ones_like(f32(s.chosen))
    c = one if s.chosen_len is None else f32(s.chosen_len)
    r = one if s.rejected_len is None else f32(s.rejected_len)
    return c, r


def mean_logps(s: PairScores) -> tuple[Tensor, Tensor]:
    """Per-token mean log-probs `pi / len` of chosen and rejected."""
    len_c, len_r = lengths(s)
    return f32(s.chosen) / len_c, f32(s.rejected) / len_r


def soft_label(s: PairScores) -> Tensor | None:
    return None if s.label is None else f32(s.label)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012).

    Each branch gets a safe input where the other is selected: `torch.where` back-propagates a
    zero into the unused branch too, and `0 * inf` there (log1p(-exp(x)) at x just below 0,
    where exp(x) rounds to 1) made the gradient NaN although the value was finite.
    """
    near = x > -math.log(2.0)
    half = torch.full_like(x, -math.log(2.0))
    x_near = torch.where(near, x, half)
    x_far = torch.where(near, half, x)
    return torch.where(near, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def pair_metrics(
    s: PairScores, chosen_reward: Tensor, rejected_reward: Tensor
) -> dict[str, Tensor]:
    """The metrics every loss reports, per sample and detached.

    `accuracy` is the implicit-reward accuracy; `ranking_accuracy` is the
    fraction with `pi_c > pi_r` regardless of the reference (Chen et al. 2024,
    "Preference learning algorithms do not learn preference rankings").
    Both score a pair against its label: where `label < 0.5` the data prefers
    `rejected`, so the pair is right when the order is reversed (as `dpo` and
    `smpo` train it and `mmalign eval` counts it). Rewards and margin stay as
    `chosen` minus `rejected`.
    """
    chosen_reward = chosen_reward.detach()
    rejected_reward = rejected_reward.detach()
    margin = chosen_reward - rejected_reward
    pi_c, pi_r = s.chosen.detach(), s.rejected.detach()
    right, ranked = margin > 0, pi_c > pi_r
    if s.label is not None:
        flip = s.label.detach() < 0.5
        right = torch.where(flip, margin < 0, right)
        ranked = torch.where(flip, pi_c < pi_r, ranked)
    return {
        "chosen_reward": chosen_reward,
        "rejected_reward": rejected_reward,
        "margin": margin,
        "accuracy": right.float(),
        "ranking_accuracy": ranked.float(),
    }


def logsig(x: Tensor) -> Tensor:
    return F.logsigmoid(x)


def check_beta(beta: float, name: str = "beta") -> None:
    if not beta > 0:
        raise ValueError(f"{name} must be > 0, got {beta}")


def check_nonnegative(value: float, name: str) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
