"""Bad input is a ValueError that names the field and says why; nothing is broadcast."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_scores

from mmalign.losses import LOSSES


def test_shape_mismatch_names_the_field(scores):
    bad = dataclasses.replace(scores, rejected=scores.rejected[:3])
    with pytest.raises(ValueError, match=r"PairScores\.rejected has shape \[3\].*\[8\]"):
        LOSSES["dpo"](bad)


def test_scalar_is_not_broadcast(scores):
    bad = dataclasses.replace(scores, label=torch.tensor(0.7))
    with pytest.raises(ValueError, match=r"PairScores\.label has shape \[\]"):
        LOSSES["dpo"](bad)


def test_two_dimensional_chosen_is_rejected(scores):
    bad = dataclasses.replace(scores, chosen=scores.chosen[:, None])
    with pytest.raises(ValueError, match=r"PairScores\.chosen must be a 1-D tensor"):
        LOSSES["dpo"](bad)


@pytest.mark.parametrize("field", ["chosen", "rejected", "ref_chosen", "ref_rejected"])
def test_nan_names_the_field(scores, field):
    value = getattr(scores, field).clone()
    value[2] = float("nan")
    with pytest.raises(ValueError, match=rf"PairScores\.{field} holds 1 NaN"):
        LOSSES["dpo"](dataclasses.replace(scores, **{field: value}))


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
def test_robust_eps_out_of_range(scores, eps):
    with pytest.raises(ValueError, match=r"eps .* must lie in \[0, 0.5\)"):
        LOSSES["robust"](scores, eps=eps)


@pytest.mark.parametrize("name", [n for n, loss in LOSSES.items() if "beta" in loss.defaults])
@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_non_positive_beta(scores, name, beta):
    with pytest.raises(ValueError, match=r"beta must be > 0"):
        LOSSES[name](make_scores(lengths=True), beta=beta)


def test_label_outside_unit_interval(scores):
    bad = dataclasses.replace(scores, label=torch.full_like(scores.chosen, 1.2))
    with pytest.raises(ValueError, match=r"PairScores\.label must lie in \[0, 1\]"):
        LOSSES["dpo"](bad)


def test_non_positive_length(scores):
    bad = dataclasses.replace(scores, chosen_len=torch.zeros_like(scores.chosen))
    with pytest.raises(ValueError, match=r"PairScores\.chosen_len must be > 0"):
        LOSSES["simpo"](bad)


def test_unknown_argument_suggests_the_closest(scores):
    with pytest.raises(ValueError, match=r"no argument 'betta'; did you mean 'beta'"):
        LOSSES["dpo"](scores, betta=0.1)


def test_orpo_needs_log_probabilities(scores):
    bad = dataclasses.replace(scores, chosen=-scores.chosen)
    with pytest.raises(ValueError, match=r"orpo needs log-probabilities"):
        LOSSES["orpo"](bad)


def test_ignored_soft_label_warns(scores):
    labelled = dataclasses.replace(scores, label=torch.full_like(scores.chosen, 0.6))
    LOSSES["hinge"]._warned.clear()
    with pytest.warns(UserWarning, match="ignores soft labels"):
        LOSSES["hinge"](labelled)
