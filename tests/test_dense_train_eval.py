"""`model.kind: reward` through `mmalign train`, and `mmalign eval dense` metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmalign.cli import main
from mmalign.eval.dense import heatmap_metrics, pearson, spearman
from mmalign.rewards import get_scorer

ROOT = Path(__file__).resolve().parents[1]


def test_correlations_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, torch.tensor([1.0, 0.0, 1.0, 0.0])) == pytest.approx(-0.4472136, abs=1e-6)
    assert pearson(x, torch.ones(4)) == 0.0  # constant: defined as 0
    # monotone but not linear: SRCC 1; ties at their average rank
    assert spearman(x, x**3) == pytest.approx(1.0)
    y = torch.tensor([1.0, 1.0, 2.0, 3.0])  # ranks 0.5, 0.5, 2, 3
    r = torch.tensor([0.5, 0.5, 2.0, 3.0])
    assert spearman(x, y) == pytest.approx(pearson(torch.arange(4.0), r))


def test_heatmap_metrics_by_hand():
    true = torch.zeros(2, 2, 2)
    true[0, 0, 0] = 1.0  # image 0 has a flaw, image 1 is clean
    pred = torch.zeros(2, 2, 2)
    pred[0, 0, 0] = 0.5
    pred[1] = 0.5
    m = heatmap_metrics(pred, true)
    assert m["mse"] == pytest.approx((0.25 / 4 + 0.25) / 2)
    assert m["mse_empty"] == pytest.approx(0.25)
    assert m["cc"] == pytest.approx(1.0)  # image 0: prediction proportional to the truth
    assert (m["images_with_flaws"], m["images_empty"]) == (1, 1)


def test_reward_recipe_trains_saves_and_scores(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train", str(ROOT / "configs/toy/dense_reward.yaml"), "data.toy.n=16",
        "train.max_steps=3", "train.batch_size=4", "train.log_every=1",
        "reward.dim=16", "reward.heads=2", "reward.depth=1", f"output_dir={out}",
    ]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    # the two MSE terms: loss = heatmap MSE + score MSE, each the negated recipe score
    r = records[-1]
    assert r["heatmap/sft/loss"] == pytest.approx(-r["heatmap/score_chosen"], rel=1e-5)
    assert r["loss"] > 0
    scorer = get_scorer(f"dense:{out}", device="cpu")
    images = torch.rand(2, 3, 32, 32)
    dense = scorer.dense(images, ["a red circle", "a blue square"])
    assert dense["artifact"].shape == (2, 1, 32, 32)
    assert (
        main(
            [
                "eval",
                "dense",
                "--model",
                str(out),
                "--data",
                "toy:flaws:heldout",
                "--n",
                "8",
                "--sample",
                "2",
                "--out",
                str(tmp_path / "eval"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "overall       PLCC" in text and "artifact      heatmap MSE" in text
    raw = (tmp_path / "eval" / "dense_eval.json").read_text()
    assert "NaN" not in raw  # strict JSON: toy:flaws' empty misalignment maps give a null CC
    result = json.loads(raw)
    assert set(result["scores"]) == {"alignment", "aesthetics", "plausibility", "overall"}
    assert "data:image/png;base64" in (tmp_path / "eval" / "dense_report.html").read_text()


def test_reward_recipe_rejects_a_preference_objective(tmp_path, capsys):
    args = ["train", str(ROOT / "configs/toy/dense_reward.yaml"), "objective=[{loss: dpo}]",
            f"output_dir={tmp_path}"]  # fmt: skip
    assert main(args) == 2
    assert "model.kind reward trains with" in capsys.readouterr().err
