"""The displacement alarm reads each pair's preferred side: label 0 means rejected is preferred."""

import warnings

import pytest
import torch

from mmalign.losses import PairScores
from mmalign.train.displacement import DisplacementAlarm, DisplacementWarning
from mmalign.train.reporting import pair_metrics


def _metrics(scores: PairScores) -> dict[str, float]:
    return {k: float(v) for k, v in pair_metrics({"main": scores}).items()}


def test_a_label_0_pair_whose_preferred_answer_fell_sets_off_the_alarm():
    # the rejected column is preferred (label 0): it fell 10 nats, the other answer 20
    scores = PairScores(
        chosen=torch.tensor([-120.0]), rejected=torch.tensor([-110.0]),
        ref_chosen=torch.tensor([-100.0]), ref_rejected=torch.tensor([-100.0]),
        label=torch.tensor([0.0]),
    )  # fmt: skip
    metrics = _metrics(scores)
    assert metrics["main/chosen_minus_ref"] == -10 and metrics["main/rejected_minus_ref"] == -20
    with pytest.warns(DisplacementWarning, match="fell by 10"):
        out = DisplacementAlarm(threshold=5.0).update(3, metrics)
    assert out["displacement/margin"] == 10


def test_labels_of_1_or_none_read_as_before_and_a_mixed_batch_per_pair():
    chosen, rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -5.0])
    plain = _metrics(PairScores(chosen=chosen, rejected=rejected))
    ones = _metrics(PairScores(chosen=chosen, rejected=rejected, label=torch.ones(2)))
    assert plain == ones == {"main/score_chosen": -1.5, "main/score_rejected": -4.0}
    mixed = _metrics(PairScores(chosen=chosen, rejected=rejected, label=torch.tensor([1.0, 0.0])))
    assert mixed == {"main/score_chosen": -3.0, "main/score_rejected": -2.5}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no alarm without a reference drop
        DisplacementAlarm(threshold=5.0).update(1, plain)
