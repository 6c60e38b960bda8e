"""Accuracy on pairs labelled 0 (the rejected image preferred) is not scored backwards.

A label is P(chosen preferred), and saved pair datasets carry label-0 rows (the diffusion
recipes train them with rejected as the winner). `eval accuracy --scorer` counted a pair right
whenever score(chosen) > score(rejected), and `eval accuracy --model` (implicit reward) and
`data diagnose` ranked `chosen` first, whatever the label: the same preferences written with
label 0 scored as their mirror image (toy:fidelity: 0.5 instead of 1.0).
"""

from __future__ import annotations

import torch
from diffusion_helpers import save_tiny, tiny_config

from mmalign.data.schema import write_pairs
from mmalign.eval.accuracy import accuracy, outcome_scores
from mmalign.rewards import get_scorer
from mmalign.toy.render import render
from mmalign.toy.world import sample_prompts


def test_outcome_follows_the_label_side():
    diff = torch.tensor([1.0, -1.0, 1.0, -1.0, 0.05], dtype=torch.float64)
    label = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # right; wrong; wrong (the human preferred rejected); right; predicted tie vs preference
    assert outcome_scores(diff, label, 0.1).tolist() == [1.0, 0.0, 0.0, 1.0, 0.5]


def _pairs(folder, flip_odd: bool):
    prompts = sample_prompts(9, "train", 0)
    rows = []
    for i in range(8):
        good, bad = render(prompts[i]), render(prompts[i + 1])
        if flip_odd and i % 2:  # the same preference written the other way round
            rows.append({"prompt": prompts[i].text, "chosen": bad, "rejected": good, "label": 0.0})
        else:
            rows.append({"prompt": prompts[i].text, "chosen": good, "rejected": bad, "label": 1.0})
    write_pairs(rows, folder, "image")
    return str(folder)


def test_scorer_accuracy_on_label_zero_rows(tmp_path):
    scorer = get_scorer("toy:fidelity")
    plain = accuracy(scorer, _pairs(tmp_path / "plain", False), threshold=0.0)
    mixed = accuracy(scorer, _pairs(tmp_path / "mixed", True), threshold=0.0)
    assert plain["accuracy"] == 1.0 and plain["pairs"] == 8
    assert mixed["accuracy"] == 1.0 and mixed["pairs"] == 8


def test_implicit_accuracy_scores_the_preferred_image_as_chosen(tmp_path):
    from mmalign.diffusion.data import open_pairs
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.eval.implicit import implicit_accuracy, score_pairs
    from mmalign.train.loop import train

    tiny = save_tiny(tmp_path)
    run = tmp_path / "run"
    cfg = tiny_config(tiny, run, train={"max_steps": 2, "learning_rate": 1e-2})
    train(cfg, DiffusionRecipe)
    rows, _ = open_pairs("toy:style", "train", toy_options=dict(cfg.data.toy))
    rows = [dict(r) for r in rows][:6]
    keep = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
             "label": 1.0} for r in rows]  # fmt: skip
    mirror = [{"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"],
               "label": 0.0} for r in rows]  # fmt: skip
    write_pairs(keep, tmp_path / "keep", "image")
    write_pairs(mirror, tmp_path / "mirror", "image")
    a = score_pairs(str(run), str(tmp_path / "keep"), draws=1, device="cpu")
    b = score_pairs(str(run), str(tmp_path / "mirror"), draws=1, device="cpu")
    assert (a.swapped, b.swapped) == (0, 6)
    for x, y in ((a.chosen, b.chosen), (a.rejected, b.rejected),
                 (a.ref_chosen, b.ref_chosen), (a.ref_rejected, b.ref_rejected)):  # fmt: skip
        torch.testing.assert_close(x, y)
    ra = implicit_accuracy(str(run), str(tmp_path / "keep"), draws=1, device="cpu")
    rb = implicit_accuracy(str(run), str(tmp_path / "mirror"), draws=1, device="cpu")
    assert ra["implicit_accuracy"] == rb["implicit_accuracy"]
    assert ra["mean_margin"] == rb["mean_margin"] != 0.0
    assert rb["rejected_preferred"] == 6
