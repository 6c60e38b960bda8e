"""Objective: weighted terms over named pairs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_scores

from mmalign.losses import LOSSES, Objective, Term


def test_weighted_sum_of_terms_by_hand():
    main, visual = make_scores(seed=1), make_scores(seed=2)
    obj = Objective.from_config(
        [{"loss": "dpo", "beta": 0.5}, {"pair": "visual", "loss": "dpo", "weight": 0.25}]
    )
    out = obj({"main": main, "visual": visual})
    expected = LOSSES["dpo"](main, beta=0.5).loss.mean() + 0.25 * LOSSES["dpo"](visual).loss.mean()
    torch.testing.assert_close(out.loss, expected)
    assert obj.pairs == ("main", "visual")
    assert "main/dpo/accuracy" in out.metrics and "visual/dpo/margin" in out.metrics
    assert float(out.metrics["loss"]) == pytest.approx(float(expected))
    lean = obj({"main": main, "visual": visual}, with_metrics=False)  # a step that does not log
    assert set(lean.metrics) == {"loss"} and torch.equal(lean.loss, out.loss)


def test_per_pair_weight_applies_before_the_mean():
    s = make_scores(batch=4)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    obj = Objective([Term("main", "hinge", {"beta": 5.0})])
    out = obj({"main": dataclasses.replace(s, weight=w)})
    per = LOSSES["hinge"](s, beta=5.0).loss
    torch.testing.assert_close(out.loss, (per * w).mean())


def test_needs_reference():
    assert Objective.from_config([{"loss": "dpo"}]).needs_reference
    assert not Objective.from_config([{"loss": "mapo"}, {"loss": "sft"}]).needs_reference
    assert Objective.from_config([{"loss": "simpo"}, {"loss": "dpo", "pair": "x"}]).needs_reference


def test_rpo_is_dpo_plus_sft_and_backpropagates():
    s = make_scores(lengths=True)
    s.chosen.requires_grad_(True)
    obj = Objective.from_config([{"loss": "dpo"}, {"loss": "sft", "weight": 1.0}])
    out = obj({"main": s})
    out.loss.backward()
    assert torch.isfinite(s.chosen.grad).all()
    assert set(out.terms) == {"main/dpo", "main/sft"}


def test_same_loss_twice_on_one_pair_keeps_metrics_apart():
    obj = Objective.from_config([{"loss": "dpo", "beta": 0.1}, {"loss": "dpo", "beta": 1.0}])
    out = obj({"main": make_scores()})
    assert "main/dpo/loss" in out.metrics and "main/dpo#1/loss" in out.metrics


def test_missing_pair_names_it():
    obj = Objective.from_config([{"pair": "blind", "loss": "dpo"}])
    with pytest.raises(ValueError, match=r"needs pair 'blind' but the scorer produced: main"):
        obj({"main": make_scores()})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"loss": "dpoo"}], r"objective\[0\]\.loss: unknown loss 'dpoo'; did you mean 'dpo'"),
        ([{"loss": "dpo"}, {"loss": "mapo", "betta": 1}], r"objective\[1\]: .*did you mean 'beta'"),
        ([{"beta": 0.1}], r"objective\[0\]\.loss is missing"),
        ([{"loss": "dpo", "weight": "high"}], r"objective\[0\]\.weight must be a number"),
        ([], r"at least one term"),
    ],
)
def test_config_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        Objective.from_config(spec)


def test_diffusion_terms_that_leave_beta_at_its_default_are_named() -> None:
    from mmalign.losses import LOSSES
    from mmalign.train.objective_check import diffusion_beta_warnings

    defaults = {name: loss.defaults for name, loss in LOSSES.items()}
    specs = [
        {"pair": "main", "loss": "dpo"},  # beta left at 0.1
        {"pair": "main", "loss": "smpo", "beta": 2500.0},
        {"pair": "main", "loss": "mapo"},  # MaPO's beta is its own weight
        {"pair": "main", "loss": "sft"},  # no beta
        {"pair": "main", "loss": "diffusion_kto"},
    ]
    warnings = diffusion_beta_warnings(specs, defaults)
    assert [w.split(":")[0] for w in warnings] == ["objective.0", "objective.4"]
    assert "beta 0.1" in warnings[0] and "objective.0.beta" in warnings[0]
    default = [{"pair": "main", "loss": "dpo", "beta": 0.1}]  # a recipe without an objective
    assert len(diffusion_beta_warnings(default, defaults)) == 1
    assert diffusion_beta_warnings([{"pair": "main", "loss": "dpo", "beta": 50.0}], defaults) == []
