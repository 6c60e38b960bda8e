"""The showcase's ranking accuracy counts a tied pair of logits half, as its chance level says."""

from __future__ import annotations

import torch

from mmalign.showcase import ranking_accuracy


def test_untrained_uniform_policy_scores_chance():
    u = torch.tensor([0.3, -1.0, 2.0, 0.5])
    # the uniform start ties every pair: chance (0.5), not 0 as if it ranked all wrongly
    assert ranking_accuracy(torch.zeros(4), u) == 0.5


def test_partly_tied_logits():
    u = torch.tensor([0.0, 1.0, 2.0])
    # pairs (0,1) tied, (0,2) right, (1,2) right: (0.5 + 1 + 1) / 3
    assert abs(ranking_accuracy(torch.tensor([0.0, 0.0, 1.0]), u) - 2.5 / 3) < 1e-6
    assert ranking_accuracy(u, u) == 1.0 and ranking_accuracy(-u, u) == 0.0
