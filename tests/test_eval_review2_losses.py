"""Two loss-input defects.

`PairScores.swapped()` exchanged chosen and rejected and turned a label into `1 - label`, but
left a missing label missing. A missing label means 1 (the chosen side is preferred), so the
swap of an unlabelled pair claimed the *old rejected* side was preferred while the swap of the
same pair labelled 1 kept the preference: two spellings of one pair swapped to opposite
preferences. Now a swap always keeps the preference (label 1 - label, a missing label read
as 1).

ORPO refused a mean token log-prob of exactly 0, which bf16 log-softmax gives for a token
predicted with certainty: log(1 - e^0) is -inf, so the odds of p = 1 are infinite. TRL's
`odds_ratio_loss` has the same log1mexp and gives an infinite loss (and a NaN gradient) when
the rejected side is at 0. mmalign reads the odds term at -ORPO_MAX_MEAN_LOGP at most (the
gradient passes straight through), so the loss and gradient stay finite.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.losses import LOSSES, Objective, PairScores


def _pair(label: torch.Tensor | None) -> PairScores:
    return PairScores(chosen=torch.tensor([-1.0, -2.0]), rejected=torch.tensor([-1.5, -1.0]),
                      ref_chosen=torch.tensor([-1.2, -1.8]),
                      ref_rejected=torch.tensor([-1.4, -1.3]), label=label)  # fmt: skip


def test_swapped_keeps_the_preference_with_or_without_a_label():
    none, ones = _pair(None), _pair(torch.ones(2))
    assert none.swapped().label is not None
    torch.testing.assert_close(none.swapped().label, torch.zeros(2))
    torch.testing.assert_close(ones.swapped().label, torch.zeros(2))
    torch.testing.assert_close(_pair(torch.tensor([0.25, 0.0])).swapped().label,
                               torch.tensor([0.75, 1.0]))  # fmt: skip
    # a label-aware loss sees one pair in both orders: the same loss
    for s in (none, ones):
        torch.testing.assert_close(LOSSES["dpo"](s.swapped()).loss, LOSSES["dpo"](s).loss)
    # swapping twice gives the pair back
    twice = none.swapped().swapped()
    torch.testing.assert_close(twice.chosen, none.chosen)
    torch.testing.assert_close(twice.label, torch.ones(2))


def _orpo(chosen: float, rejected: float, dtype: torch.dtype = torch.float32):
    c = torch.tensor([chosen], dtype=dtype, requires_grad=True)
    r = torch.tensor([rejected], dtype=dtype, requires_grad=True)
    out = LOSSES["orpo"](PairScores(c, r), beta=0.1)
    out.loss.sum().backward()
    return out, c.grad, r.grad


def test_orpo_takes_a_mean_log_prob_of_exactly_zero():
    for dtype in (torch.float32, torch.bfloat16):
        for chosen, rejected in ((0.0, -1.0), (-1.0, 0.0), (0.0, 0.0)):
            out, gc, gr = _orpo(chosen, rejected, dtype)
            assert torch.isfinite(out.loss).all(), (dtype, chosen, rejected, out.loss)
            assert torch.isfinite(out.metrics["log_odds"]).all()
            assert gc is not None and gr is not None
            assert torch.isfinite(gc).all() and torch.isfinite(gr).all(), (gc, gr)
    # a certain rejected answer is pushed down (its gradient on the loss is positive) and a
    # certain chosen one against a likely rejected one costs less than the reverse
    out_r, _, gr = _orpo(-1.0, 0.0)
    assert float(gr) > 0
    out_c, _, _ = _orpo(0.0, -1.0)
    assert float(out_c.loss.detach()) < float(out_r.loss.detach())
    # the odds term at 0 continues the values just below it (no jump)
    near, _, _ = _orpo(-1e-9, -1.0)
    torch.testing.assert_close(out_c.loss, near.loss, rtol=1e-3, atol=1e-3)


def test_orpo_at_zero_through_the_objective_on_summed_scores():
    w = torch.nn.Parameter(torch.ones(2))
    summed = PairScores(torch.tensor([0.0, -3.0]) * w, torch.tensor([-6.0, 0.0]) * w,
                        chosen_len=torch.tensor([4.0, 3.0]),
                        rejected_len=torch.tensor([6.0, 2.0]))  # fmt: skip
    out = Objective.from_config([{"loss": "orpo", "beta": 0.1}])({"main": summed})
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all(), w.grad


def test_a_positive_mean_log_prob_is_still_refused():
    s = PairScores(torch.tensor([0.1]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="orpo needs log-probabilities"):
        LOSSES["orpo"](s)
