"""ORPO's `log(1 - e^m)` keeps a finite gradient when a mean token log-prob is just below 0.

`log1mexp` picked between two branches with `torch.where`; the unused branch
`log1p(-exp(m))` is -inf where `exp(m)` rounds to 1 (|m| < ~3e-8 in float32), and the zero
gradient `torch.where` sends into it became `0 * inf = NaN`: one pair of near-certain tokens
turned the whole batch's gradient into NaN while the loss itself stayed finite.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.losses import LOSSES, Objective, PairScores
from mmalign.losses._common import log1mexp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log1mexp_gradient_is_finite_and_exact_near_zero(dtype):
    x = torch.tensor([-1e-30, -1e-20, -1e-10, -1e-8, -1e-3, -0.5, -1.0, -30.0], dtype=dtype)
    x.requires_grad_(True)
    log1mexp(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all(), x.grad
    x64 = x.detach().double()
    want = -1 / torch.expm1(-x64)  # d/dx log(1 - e^x)
    torch.testing.assert_close(x.grad.double(), want, rtol=1e-5, atol=0.0)


def test_orpo_gradient_stays_finite_for_a_near_certain_completion():
    w = torch.nn.Parameter(torch.ones(4))  # one shared scale: a NaN anywhere spoils all of it
    summed_c = torch.tensor([-2e-7, -3.0, -4.0, -5.0])  # pair 0: 10 near-certain tokens
    summed_r = torch.tensor([-6.0, -7.0, -8.0, -9.0])
    lens = torch.tensor([10.0, 5.0, 5.0, 5.0])
    scores = PairScores(summed_c * w, summed_r * w, chosen_len=lens, rejected_len=lens)
    out = Objective.from_config([{"loss": "orpo", "beta": 0.1}])({"main": scores})
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all(), w.grad

    # the gradient of pair 0's chosen score, against the formula in float64
    mc = torch.tensor(-2e-8, dtype=torch.float64)
    mr = torch.tensor(-6.0 / 10, dtype=torch.float64)
    beta = 0.1
    lo = (mc - mr) - (torch.log(-torch.expm1(mc)) - torch.log(-torch.expm1(mr)))
    dlo = 1 + torch.exp(mc) / -torch.expm1(mc)
    dloss_dmc = -1 - beta * torch.sigmoid(-lo) * dlo
    c = torch.tensor([-2e-7], requires_grad=True)
    one = PairScores(c, torch.tensor([-6.0]), chosen_len=torch.tensor([10.0]),
                     rejected_len=torch.tensor([10.0]))  # fmt: skip
    LOSSES["orpo"](one, beta=beta).loss.sum().backward()
    assert c.grad is not None
    torch.testing.assert_close(c.grad.double(), (dloss_dmc / 10).reshape(1), rtol=1e-4, atol=0.0)
