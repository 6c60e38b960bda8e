"""KTO: desirable / undesirable losses (METHODS.md section 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import check_beta, check_nonnegative, log_ratios, pair_metrics
from .processes import batch_mean
from .scores import LossOutput, PairScores


def kto_reference_point(lw: Tensor, ll: Tensor) -> Tensor:
    """`z = clamp(mean([lw; ll]), 0)`, detached: the KL reference point from the batch.

    TRL estimates z from mismatched prompt/completion pairs; Diffusion-KTO
    uses the batch mean, as here. In training the mean is over the global batch, every
    process's samples (`processes.across_processes`), and clamped after it, as both take it.
    """
    return batch_mean(torch.cat([lw, ll])).clamp(min=0)


def kto(
    s: PairScores, *, beta: float = 0.1, lambda_d: float = 1.0, lambda_u: float = 1.0
) -> LossOutput:
    """KTO, Ethayarajh et al. 2024, Eq. 8, with chosen = desirable and rejected = undesirable.

    Per pair, the mean of its two examples' terms:
    `0.5 * (lambda_d*(1 - sig(beta*(lw - z))) + lambda_u*(1 - sig(beta*(z - ll))))`.
    A pair holds two examples, so halving their sum makes the batch mean over
    pairs the mean over the 2B examples: Eq. 8's expectation over the data, on
    the paper's scale. `lambda_d` / `lambda_u` weigh the desirable / undesirable
    term as in the paper.

    vs TRL 1.16: equal to KTOTrainer `loss_type="kto"` (`desirable_weight =
    lambda_d`, `undesirable_weight = lambda_u`) given the same reference point z.
    z differs: TRL (and the paper) estimate the KL term from mismatched
    prompt/completion pairs, one extra policy and reference pass; here it is the
    detached, clamped batch mean of the matched log-ratios (`kto_reference_point`),
    as in Diffusion-KTO's code, which costs no extra pass.
    """
    check_beta(beta)
    check_nonnegative(lambda_d, "lambda_d")
    check_nonnegative(lambda_u, "lambda_u")
    lw, ll = log_ratios(s)
    z = kto_reference_point(lw, ll)
    desirable = lambda_d * (1 - torch.sigmoid(beta * (lw - z)))
    undesirable = lambda_u * (1 - torch.sigmoid(beta * (z - ll)))
    loss = 0.5 * (desirable + undesirable)
    metrics = pair_metrics(s, beta * lw, beta * ll)
    metrics["kl"] = z.expand_as(lw)
    return LossOutput(loss, metrics)
