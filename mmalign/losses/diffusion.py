"""Losses that expect diffusion scores, `score = -mse` (METHODS.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import check_beta, f32, log_ratios, logsig, pair_metrics, soft_label
from .scores import LossOutput, PairScores
from .unpaired import kto_reference_point


def mapo_s(mse: Tensor, snr: float) -> Tensor:
    """`s(x) = snr*x / (exp(snr*x) - 1)`, bounded and decreasing in the MSE x.

    Written as `y*exp(-y) / -expm1(-y)` for y > 0 so a large MSE cannot
    overflow; near 0 (where it is 0/0) the Taylor series `1 - y/2 + y**2/12`
    takes over. Every branch gets a safe input so gradients stay finite.
    """
    y = snr * mse
    small = y.abs() < 1e-4
    y_pos = torch.where(y >= 1e-4, y, torch.ones_like(y))
    y_neg = torch.where(y <= -1e-4, y, -torch.ones_like(y))
    large = y_pos * torch.exp(-y_pos) / -torch.expm1(-y_pos)
    negative = y_neg / torch.expm1(y_neg)  # only for artificial negative "MSE"
    taylor = 1 - y / 2 + y * y / 12
    return torch.where(small, taylor, torch.where(y > 0, large, negative))


def mapo(
    s: PairScores, *, beta: float = 0.1, snr: float = 0.5, num_timesteps: int = 1000
) -> LossOutput:
    """MaPO, Hong, Paul et al. 2024 (reference-free), as in the authors' code.

    `log_odds = s(mse_c) - s(mse_r)`, `ratio = logsig(log_odds * T)`,
    `loss = mse_c - beta*ratio` per sample (its batch mean is the paper's
    `mse_c.mean() - beta*ratio.mean()`). The sign matters: the older diffusers
    "diffusion ORPO" example uses `mse_c - mse_r` and pushes the wrong way.
    """
    check_beta(beta)
    if not snr > 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    if not num_timesteps > 0:
        raise ValueError(f"num_timesteps must be > 0, got {num_timesteps}")
    mse_c, mse_r = -f32(s.chosen), -f32(s.rejected)
    log_odds = mapo_s(mse_c, snr) - mapo_s(mse_r, snr)
    ratio = logsig(log_odds * num_timesteps)
    loss = mse_c - beta * ratio
    metrics = pair_metrics(s, -beta * mse_c, -beta * mse_r)
    metrics["log_odds"] = log_odds.detach()
    return LossOutput(loss, metrics)


def smpo(s: PairScores, *, beta: float = 0.1, gamma: float = 10.0) -> LossOutput:
    """SmPO-Diffusion, Lu et al. 2025 (ICML), smoothed-preference Diffusion-DPO.

    `-logsig(beta*(2p - 1)*gamma*(lw - ll))` with `lw - ll = -((mse_c - mse_r) - (ref_c -
    ref_r))` (score = -mse) and p = `s.label` (None means 1). The paper writes
    `-logsig(-0.5*beta_dpo*(2p - 1)*gamma*(mse differences))`; like every diffusion loss in
    mmalign, `beta` here is dpo's beta, `0.5 * beta_dpo` (SmPO's 5000 for SDXL is 2500 here,
    its 2000 for SD1.5 is 1000). So with p = 1 and gamma = 1 it equals `dpo(beta)`, which is
    Diffusion-DPO. At p = 0.5 the loss is the constant log 2: no push on near-ties.
    """
    check_beta(beta)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    lw, ll = log_ratios(s)
    p = soft_label(s)
    smooth = torch.ones_like(lw) if p is None else 2 * p - 1
    loss = -logsig(beta * smooth * gamma * (lw - ll))
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def diffusion_kto(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """Diffusion-KTO, Li et al. 2024, on a pair: chosen = desirable, rejected = undesirable.

    Per image `g = ref_mse - mse` (= lw or ll), `kl = clamp(mean(g), 0)`
    detached (in training the mean over every process's images, as the authors
    average it across GPUs), `1 - sig(sign*beta*(g - kl))` with sign +1 for the chosen and -1
    for the rejected image; the pair's loss is the sum of its two images'.
    The authors use beta = 1000.

    Scale: the authors' code (train_kto_sd_v1.5.py) takes the mean over images,
    so this per-pair sum is 2x their loss (kto halves its sum; this loss keeps
    its scale until the configs tuned on it are re-checked). vs TRL 1.16: TRL has
    none.
    """
    check_beta(beta)
    lw, ll = log_ratios(s)
    kl = kto_reference_point(lw, ll)
    loss = (1 - torch.sigmoid(beta * (lw - kl))) + (1 - torch.sigmoid(-beta * (ll - kl)))
    metrics = pair_metrics(s, beta * lw, beta * ll)
    metrics["kl"] = kl.expand_as(lw)
    return LossOutput(loss, metrics)
