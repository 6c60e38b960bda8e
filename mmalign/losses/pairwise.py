"""Pairwise preference losses shared by every modality (METHODS.md section 1).

Each function takes `PairScores` and hyperparameters and returns the
unweighted per-sample loss [B] with per-sample metrics. Notation:
`lw = pi_c - ref_c`, `ll = pi_r - ref_r`, `delta = lw - ll`.

Each docstring says how the loss compares with TRL 1.16's trainers on the same
log-probs (tests/test_losses_vs_trl.py runs TRL's own code to check it). A batch
loss is always the mean of the per-pair losses (the Objective takes it), so
where TRL pools tokens over a batch the two agree per pair but not per batch.
"""

from __future__ import annotations

import torch

from ._common import (
    check_beta,
    check_nonnegative,
    f32,
    lengths,
    log1mexp,
    log_ratios,
    logsig,
    mean_logps,
    pair_metrics,
    soft_label,
)
from .scores import LossOutput, PairScores


def dpo(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """DPO, Rafailov et al. 2023, Eq. 7: `-logsig(beta * delta)`.

    With a soft label p = `s.label` (conservative DPO / cDPO):
    `-(p * logsig(beta*delta) + (1 - p) * logsig(-beta*delta))`.
    For diffusion scores (-mse) this is Diffusion-DPO (Wallace et al. 2024,
    Eq. 14) with `beta = 0.5 * beta_dpo`.

    vs TRL 1.16: equal to DPOTrainer `loss_type="sigmoid"`. With a soft label p
    it equals TRL's label-smoothed sigmoid at `label_smoothing = 1 - p` (which
    TRL 1.16 keeps in CPOTrainer's sigmoid, not in DPOTrainer's).
    """
    check_beta(beta)
    lw, ll = log_ratios(s)
    z = beta * (lw - ll)
    p = soft_label(s)
    loss = -logsig(z) if p is None else -(p * logsig(z) + (1 - p) * logsig(-z))
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def robust(s: PairScores, *, beta: float = 0.1, eps: float = 0.1) -> LossOutput:
    """Robust DPO, Chowdhury et al. 2024 ("Provably Robust DPO"), Eq. 8.

    `(-(1-eps)*logsig(beta*delta) + eps*logsig(-beta*delta)) / (1 - 2*eps)`,
    an unbiased loss under labels flipped at rate `eps` in [0, 0.5).

    vs TRL 1.16: equal to DPOTrainer `loss_type="robust"`, `label_smoothing = eps`.
    """
    check_beta(beta)
    if not 0 <= eps < 0.5:
        raise ValueError(f"eps (label flip rate) must lie in [0, 0.5), got {eps}")
    lw, ll = log_ratios(s)
    z = beta * (lw - ll)
    loss = (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps)
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def hinge(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """SLiC hinge loss, Zhao et al. 2023: `relu(1 - beta*delta)`.

    vs TRL 1.16: equal to DPOTrainer `loss_type="hinge"`.
    """
    check_beta(beta)
    lw, ll = log_ratios(s)
    loss = torch.relu(1 - beta * (lw - ll))
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def ipo(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """IPO, Azar et al. 2023, Eq. 17: `(delta_norm - 1/(2*beta))**2`.

    As in TRL, log-probs are length-normalised: `delta_norm` is built from
    per-token mean log-probs of policy and reference.

    vs TRL 1.16: equal to DPOTrainer `loss_type="ipo"`.
    """
    check_beta(beta)
    len_c, len_r = lengths(s)
    lw, ll = log_ratios(s)
    lw, ll = lw / len_c, ll / len_r
    loss = (lw - ll - 1 / (2 * beta)) ** 2
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def nca_pair(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """NCA, Chen et al. 2024 ("Noise Contrastive Alignment"), pairwise form.

    `-logsig(beta*lw) - 0.5*logsig(-beta*lw) - 0.5*logsig(-beta*ll)`.

    vs TRL 1.16: equal to DPOTrainer `loss_type="nca_pair"`.
    """
    check_beta(beta)
    lw, ll = log_ratios(s)
    loss = -logsig(beta * lw) - 0.5 * logsig(-beta * lw) - 0.5 * logsig(-beta * ll)
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def bco_pair(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """BCO, Jung et al. 2024 ("Binary Classifier Optimization"), pairwise form.

    `-logsig(beta*lw - m) - logsig(-(beta*ll - m))` with the reward shift `m`
    the detached batch mean of `beta*[lw; ll]` (the paper keeps a running mean
    across steps instead).

    vs TRL 1.16: differs. DPOTrainer `loss_type="bco_pair"` has no shift (m = 0);
    the two are equal when TRL's reference log-probs are raised by `m / beta`.
    Kept because the shift is part of the paper's loss (its reward shift delta);
    the batch mean stands in for the paper's running mean (no state across steps).
    """
    check_beta(beta)
    lw, ll = log_ratios(s)
    m = (beta * torch.cat([lw, ll])).mean().detach()
    loss = -logsig(beta * lw - m) - logsig(-(beta * ll - m))
    metrics = pair_metrics(s, beta * lw, beta * ll)
    metrics["reward_shift"] = m.expand_as(lw)
    return LossOutput(loss, metrics)


def dpop(s: PairScores, *, beta: float = 0.1, lam: float = 50.0) -> LossOutput:
    """DPO-Positive, Pal et al. 2024 (Smaug), Eq. 3.

    `-logsig(beta*(delta - lam*relu(ref_c - pi_c)))`: penalises the chosen
    likelihood falling below the reference.

    vs TRL 1.16: TRL has none.
    """
    check_beta(beta)
    check_nonnegative(lam, "lam")
    lw, ll = log_ratios(s)
    penalty = torch.relu(f32(s.ref_chosen) - f32(s.chosen))  # type: ignore[arg-type]
    loss = -logsig(beta * (lw - ll - lam * penalty))
    return LossOutput(loss, pair_metrics(s, beta * lw, beta * ll))


def simpo(s: PairScores, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """SimPO, Meng et al. 2024, Eq. 6 (reference-free).

    `-logsig(beta*(mean_logp_c - mean_logp_r) - gamma)`.

    vs TRL 1.16: equal to CPOTrainer `loss_type="simpo"` with `cpo_alpha=0`
    (TRL's `simpo_gamma` is gamma).
    """
    check_beta(beta)
    mc, mr = mean_logps(s)
    loss = -logsig(beta * (mc - mr) - gamma)
    return LossOutput(loss, pair_metrics(s, beta * mc, beta * mr))


def cpo(s: PairScores, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """CPO, Xu et al. 2024, Eq. 5 (reference-free).

    `-logsig(beta*(pi_c - pi_r)) + alpha*nll_c` with `nll_c = -pi_c / len_c`,
    the chosen completion's mean token NLL: the paper writes the NLL term as
    `-log pi(y_w|x)`, but the authors' code (and TRL's CPOTrainer) computes it as
    the cross-entropy averaged over the chosen completion's tokens, so `alpha`
    means the same here as there. The preference term uses summed log-probs.

    vs TRL 1.16: CPOTrainer `loss_type="sigmoid"`, `cpo_alpha = alpha`: equal per
    pair. Over a batch TRL pools the NLL over all chosen tokens
    (`sum(-pi_c) / sum(len_c)`), while here each pair's mean counts once (the
    batch loss is the mean of per-pair losses, so pair weights and per-pair
    metrics stay per pair); the two agree when the lengths are equal.
    """
    check_beta(beta)
    check_nonnegative(alpha, "alpha")
    pc, pr = f32(s.chosen), f32(s.rejected)
    len_c, _ = lengths(s)
    # Mean, not summed, NLL: the scale CPO's authors and TRL train alpha at.
    loss = -logsig(beta * (pc - pr)) + alpha * (-pc / len_c)
    return LossOutput(loss, pair_metrics(s, beta * pc, beta * pr))


ORPO_MAX_MEAN_LOGP = -1e-8  # the odds term reads a mean log-prob at most this (see orpo)


def _below_certain(m: torch.Tensor) -> torch.Tensor:
    """`m` with values above ORPO_MAX_MEAN_LOGP read as it, the gradient passed straight
    through: the odds of p = 1 are infinite (log(1 - e^0) = -inf)."""
    return m + (m.clamp(max=ORPO_MAX_MEAN_LOGP) - m).detach()


def orpo(s: PairScores, *, beta: float = 0.1) -> LossOutput:
    """ORPO, Hong et al. 2024, Eqs. 4-7 (reference-free), on mean token log-probs.

    `log_odds = (p_c - p_r) - (log(1 - e^p_c) - log(1 - e^p_r))`,
    `loss = nll_c - beta*logsig(log_odds)` with `nll_c = -p_c` (the mean
    token NLL, as the paper's SFT term).

    A mean log-prob of exactly 0 (every token certain; bf16 log-softmax rounds to it) is
    valid: the odds term reads p above ORPO_MAX_MEAN_LOGP (-1e-8) as that value, with the
    gradient of the odds there (about 1e8, finite) passed straight through, so a certain
    rejected answer is still pushed down; the NLL term uses p itself. TRL 1.16's
    `odds_ratio_loss` takes log1mexp(0) = -inf: an infinite loss and a NaN gradient when the
    rejected answer is at 0. A positive mean log-prob is not a log-prob and is refused.

    vs TRL 1.16: differs in the NLL term only. The odds-ratio term equals
    ORPOTrainer's `odds_ratio_loss`; TRL's NLL is the cross-entropy over prompt
    and completion tokens pooled over the batch's chosen sequences (the authors'
    repository default). Here it is the chosen completion's mean token NLL, the
    paper's L_SFT term of L_ORPO (Eq. 6): the response's likelihood given the
    prompt, so the prompt is conditioned on rather than fitted.
    """
    check_beta(beta)
    mc, mr = mean_logps(s)
    if bool((mc > 0).any() | (mr > 0).any()):
        raise ValueError(
            "orpo needs log-probabilities: every mean token log-prob (score / length) must be <= 0"
        )
    oc, orr = _below_certain(mc), _below_certain(mr)
    log_odds = (oc - orr) - (log1mexp(oc) - log1mexp(orr))
    loss = -mc - beta * logsig(log_odds)
    metrics = pair_metrics(s, beta * mc, beta * mr)
    metrics["log_odds"] = log_odds.detach()
    return LossOutput(loss, metrics)


def sft(s: PairScores) -> LossOutput:
    """The SFT term of RPO (Liu et al. 2024): `nll_c / len_c` = `-pi_c / len_c`.

    Weighted by `alpha` in an Objective next to a preference loss, this is
    RPO: `L_pref + alpha * nll_c / len_c`.

    vs TRL 1.16: DPOTrainer `loss_type="sft"` (and `["sigmoid", "sft"]` with
    `loss_weights=[1, alpha]` for RPO): equal per pair. Over a batch TRL pools
    tokens (`sum(-pi_c) / sum(len_c)`), here each pair's mean counts once, as
    the papers' expectation over pairs; equal when the lengths are equal.
    """
    mc, mr = mean_logps(s)
    return LossOutput(-mc, pair_metrics(s, mc, mr))
