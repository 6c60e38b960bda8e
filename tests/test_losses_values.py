"""Every loss against numbers worked out by hand on one pair.

The pair: chosen = -1, rejected = -2, ref_chosen = -1.5, ref_rejected = -1.5,
so lw = 0.5, ll = -0.5, delta = 1. `ls(x) = log sigmoid(x)` on Python floats.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mmalign.losses import LOSSES, PairScores


def ls(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def pair(**extra: float) -> PairScores:
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    fields = {k: t(v) for k, v in extra.items()}
    return PairScores(
        chosen=t(-1.0), rejected=t(-2.0), ref_chosen=t(-1.5), ref_rejected=t(-1.5), **fields
    )


CASES = [
    # (loss, kwargs, extra PairScores fields, expected)
    ("dpo", {"beta": 1.0}, {}, -ls(1.0)),  # 0.3133
    ("dpo", {"beta": 2.0}, {"label": 0.8}, -(0.8 * ls(2.0) + 0.2 * ls(-2.0))),
    ("robust", {"beta": 1.0, "eps": 0.1}, {}, (-0.9 * ls(1.0) + 0.1 * ls(-1.0)) / 0.8),
    ("hinge", {"beta": 0.5}, {}, 0.5),  # relu(1 - 0.5 * 1)
    ("hinge", {"beta": 2.0}, {}, 0.0),
    # lengths 2 and 4: lw/2 - ll/4 = 0.25 + 0.125; (0.375 - 1/(2*0.5))^2
    ("ipo", {"beta": 0.5}, {"chosen_len": 2.0, "rejected_len": 4.0}, (0.375 - 1.0) ** 2),
    ("nca_pair", {"beta": 1.0}, {}, -ls(0.5) - 0.5 * ls(-0.5) - 0.5 * ls(0.5)),
    # one pair: the shift m = mean(0.5, -0.5) = 0
    ("bco_pair", {"beta": 1.0}, {}, -ls(0.5) - ls(0.5)),
    # z = clamp(mean(0.5, -0.5), 0) = 0; the pair's loss is the mean of its two examples' terms
    (
        "kto",
        {"beta": 1.0, "lambda_d": 2.0, "lambda_u": 1.0},
        {},
        (2 * (1 - sig(0.5)) + 1 - sig(0.5)) / 2,
    ),
    # mean log-probs -1/2 and -2/1
    ("simpo", {"beta": 2.0, "gamma": 0.5}, {"chosen_len": 2.0}, -ls(2.0 * 1.5 - 0.5)),
    ("cpo", {"beta": 1.0, "alpha": 1.0}, {}, -ls(1.0) + 1.0),
    ("sft", {}, {"chosen_len": 4.0}, 0.25),
    # ref_c - pi_c = -0.5 -> no penalty; equals dpo
    ("dpop", {"beta": 1.0, "lam": 50.0}, {}, -ls(1.0)),
    # smpo: -logsig(beta * (2p - 1) * gamma * delta) = -logsig(0.1 * 0.4 * 10 * 1)
    ("smpo", {"beta": 0.1, "gamma": 10.0}, {"label": 0.7}, -ls(0.4)),
    ("diffusion_kto", {"beta": 1.0}, {}, 2 * (1 - sig(0.5))),
]


@pytest.mark.parametrize(("name", "kwargs", "extra", "expected"), CASES)
def test_loss_matches_hand_computed(name, kwargs, extra, expected):
    out = LOSSES[name](pair(**extra), **kwargs)
    assert out.loss.shape == (1,)
    assert float(out.loss) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_dpop_penalty_when_chosen_falls_below_reference():
    # chosen -2 below ref -1.5: penalty 0.5; delta = (-0.5) - (-0.5 + ... ) computed by hand
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    s = PairScores(chosen=t(-2.0), rejected=t(-3.0), ref_chosen=t(-1.5), ref_rejected=t(-1.5))
    # lw = -0.5, ll = -1.5, delta = 1, penalty = 0.5
    out = LOSSES["dpop"](s, beta=1.0, lam=2.0)
    assert float(out.loss) == pytest.approx(-ls(1.0 - 2.0 * 0.5))


def test_cpo_nll_is_the_chosen_token_mean_by_hand():
    # Two pairs of unequal lengths: chosen -6 over 3 tokens and -2 over 4, rejected -7 and -1.
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    s = PairScores(
        chosen=t(-6.0, -2.0),
        rejected=t(-7.0, -1.0),
        chosen_len=t(3.0, 4.0),
        rejected_len=t(5.0, 1.0),
    )
    out = LOSSES["cpo"](s, beta=0.5, alpha=2.0)
    # -logsig(0.5 * (pi_c - pi_r)) + 2 * (-pi_c / len_c): NLL 6/3 = 2 and 2/4 = 0.5
    expected = [-ls(0.5 * 1.0) + 2.0 * 2.0, -ls(0.5 * -1.0) + 2.0 * 0.5]
    assert out.loss.tolist() == pytest.approx(expected, rel=1e-12)
    # The rejected lengths do not enter, and neither does a summed NLL.
    same = LOSSES["cpo"](dataclasses.replace(s, rejected_len=t(1.0, 9.0)), beta=0.5, alpha=2.0)
    assert same.loss.tolist() == pytest.approx(expected, rel=1e-12)


def test_kto_batch_is_the_mean_over_examples():
    # Two pairs: lw = (1, 0.2), ll = (-0.4, 0.6); z = clamp(mean(1, 0.2, -0.4, 0.6), 0) = 0.35.
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    s = PairScores(chosen=t(1.0, 0.2), rejected=t(-0.4, 0.6), ref_chosen=t(0.0, 0.0),
                   ref_rejected=t(0.0, 0.0))  # fmt: skip
    terms = [1.5 * (1 - sig(1.0 - 0.35)), 1.5 * (1 - sig(0.2 - 0.35)),
             0.5 * (1 - sig(0.35 + 0.4)), 0.5 * (1 - sig(0.35 - 0.6))]  # fmt: skip
    out = LOSSES["kto"](s, beta=1.0, lambda_d=1.5, lambda_u=0.5)
    assert float(out.loss.mean()) == pytest.approx(sum(terms) / 4, rel=1e-12)


def test_orpo_by_hand():
    # mean log-probs p_c = -1, p_r = -2 (lengths 1)
    log_odds = (-1 + 2) - (math.log(1 - math.exp(-1)) - math.log(1 - math.exp(-2)))
    out = LOSSES["orpo"](pair(), beta=0.5)
    assert float(out.loss) == pytest.approx(1.0 - 0.5 * ls(log_odds), rel=1e-9)


def test_mapo_by_hand():
    # mse_c = 1, mse_r = 2; s(x) = 0.5x / (exp(0.5x) - 1)
    s = lambda x: 0.5 * x / math.expm1(0.5 * x)  # noqa: E731
    expected = 1.0 - 0.1 * ls((s(1.0) - s(2.0)) * 1000)
    out = LOSSES["mapo"](pair())
    assert float(out.loss) == pytest.approx(expected, rel=1e-9)
    small = LOSSES["mapo"](pair(), num_timesteps=1)
    assert float(small.loss) == pytest.approx(1.0 - 0.1 * ls(s(1.0) - s(2.0)), rel=1e-9)


def test_metrics_by_hand():
    out = LOSSES["dpo"](pair(), beta=2.0)
    m = {k: float(v) for k, v in out.metrics.items()}
    assert m["chosen_reward"] == pytest.approx(1.0)
    assert m["rejected_reward"] == pytest.approx(-1.0)
    assert m["margin"] == pytest.approx(2.0)
    assert m["accuracy"] == 1.0
    assert m["ranking_accuracy"] == 1.0  # -1 > -2


def test_ranking_accuracy_ignores_reference():
    # implicit reward prefers chosen but the policy ranks rejected higher
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    s = PairScores(chosen=t(-3.0), rejected=t(-2.0), ref_chosen=t(-4.0), ref_rejected=t(-1.0))
    m = LOSSES["dpo"](s).metrics
    assert float(m["accuracy"]) == 1.0
    assert float(m["ranking_accuracy"]) == 0.0
