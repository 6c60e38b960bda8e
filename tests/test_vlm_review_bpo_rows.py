"""BPO's extra-rows form (`vlm.bpo_form: extra_rows`, the released code): it trains (the blind
pairs are extra rows of the `main` term, so the `blind` term leaves the objective instead of
asking the scorer for a pair it never makes), and a blind row does not inherit the soft label
of the row it came from (that label rates the rejected answer, not the blind one)."""

from __future__ import annotations

import json

import pytest
from test_vlm_train import _Accel, vlm_config

from mmalign.config import ConfigError
from mmalign.losses import Objective
from mmalign.train.loop import train
from mmalign.vlm.recipe import VLMRecipe, VLMRows, blind_rows_objective

BPO = [{"pair": "main", "loss": "dpo", "beta": 0.1}, {"pair": "blind", "loss": "dpo", "beta": 0.1}]


def test_extra_rows_form_trains(tmp_path):
    out = tmp_path / "rows"
    cfg = vlm_config(out, objective=BPO, data={"toy": {"n": 8}}, vlm={"bpo_form": "extra_rows"},
                     train={"max_steps": 1, "checkpoint_every": 1})  # fmt: skip
    train(cfg, VLMRecipe)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "main/dpo/loss" in metrics and "blind/dpo/loss" not in metrics


def test_extra_rows_objective_drops_the_blind_term_and_refuses_a_different_one():
    objective = blind_rows_objective(Objective.from_config(BPO))
    assert [(t.pair, t.loss) for t in objective.terms] == [("main", "dpo")]
    other = [BPO[0], {"pair": "blind", "loss": "dpo", "beta": 0.5}]
    with pytest.raises(ConfigError, match=r"objective\[1\]: vlm.bpo_form: extra_rows"):
        blind_rows_objective(Objective.from_config(other))


def test_blind_rows_do_not_inherit_the_soft_label():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "label": 0.7, "blind": "c"}]
    data = VLMRows(rows, [0], blind_as_rows=True)
    (_, original), (_, blind) = data[0], data[1]
    assert original["label"] == 0.7 and original["rejected"] == "b"
    assert blind["rejected"] == "c" and blind["label"] is None


def test_the_recipe_trains_the_extra_rows_objective(tmp_path):
    cfg = vlm_config(tmp_path / "rows", objective=BPO, data={"toy": {"n": 8}},
                     vlm={"bpo_form": "extra_rows"})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    assert recipe.objective.pairs == ("main",)
    assert len(recipe.dataset) == 16
