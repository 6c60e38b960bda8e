"""The accuracies every loss reports score a label-0 pair against its label.

A label below 0.5 says the data prefers `rejected`; `dpo` and `smpo` train such a pair the
other way round, and `mmalign eval` counts it that way. The metrics compared `chosen` with
`rejected` regardless: a perfectly fitted label-0 pair was reported as a miss, so training on
data with label-0 rows showed its accuracy falling while the loss fell.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from mmalign.losses import LOSSES, Objective, PairScores


def _fitted_pairs() -> PairScores:
    """Pairs 0, 1 (label 0) fitted the reversed way, pairs 2, 3 (label 1) the plain way."""
    ref = torch.full((4,), -5.0, dtype=torch.float64)  # log-probs: orpo needs < 0
    theta = torch.tensor([-2.0, -2.0, 2.0, 2.0], dtype=torch.float64)
    return PairScores(
        chosen=ref + theta,
        rejected=ref - theta,
        ref_chosen=ref,
        ref_rejected=ref,
        label=torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64),
    )


@pytest.mark.parametrize("name", ["dpo", "smpo"])
def test_a_fitted_label_zero_pair_counts_as_right(name):
    s = _fitted_pairs()
    out = Objective.from_config([{"loss": name, "beta": 1.0}])({"main": s})
    assert float(out.metrics[f"main/{name}/accuracy"]) == 1.0
    assert float(out.metrics[f"main/{name}/ranking_accuracy"]) == 1.0
    assert out.metrics[f"main/{name}/margin"] == 0.0  # the margin is still chosen - rejected


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_accuracies_agree_with_the_swapped_hard_pairs(name):
    """A label-0 pair and the same pair swapped to label 1 get the same accuracies."""
    s = _fitted_pairs()
    flip = s.label == 0
    plain = dataclasses.replace(
        s,
        chosen=torch.where(flip, s.rejected, s.chosen),
        rejected=torch.where(flip, s.chosen, s.rejected),
        label=torch.ones_like(s.label),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # losses that ignore labels warn about them
        got, want = LOSSES[name](s).metrics, LOSSES[name](plain).metrics
    for key in ("accuracy", "ranking_accuracy"):
        torch.testing.assert_close(got[key], want[key])


def test_without_labels_and_at_ties_the_metrics_are_unchanged():
    s = dataclasses.replace(_fitted_pairs(), label=None)
    m = LOSSES["dpo"](s).metrics
    assert m["accuracy"].tolist() == [0.0, 0.0, 1.0, 1.0]
    tie = dataclasses.replace(s, label=torch.full((4,), 0.5, dtype=torch.float64))
    assert LOSSES["dpo"](tie).metrics["accuracy"].tolist() == [0.0, 0.0, 1.0, 1.0]
