"""The loss-core showcase: every loss moves a bandit policy toward the hidden ranking."""

from __future__ import annotations

import json

from mmalign.losses import LOSSES
from mmalign.showcase import ranking_accuracy, run_showcase


def test_ranking_accuracy():
    import torch

    u = torch.tensor([0.0, 1.0, 2.0])
    assert ranking_accuracy(u, u) == 1.0
    assert ranking_accuracy(-u, u) == 0.0


def test_every_loss_learns_the_ranking(tmp_path):
    report = run_showcase(tmp_path, steps=200, seed=1)
    results = json.loads((tmp_path / "results.json").read_text())
    assert report.is_file() and {r["loss"] for r in results} == set(LOSSES)
    by_name = {r["loss"]: r["ranking_accuracy"] for r in results}
    # chance is 0.5 (the untrained, uniform policy)
    assert all(acc >= 0.65 for acc in by_name.values()), by_name
    assert by_name["dpo"] >= 0.9, by_name
