"""Preference accuracy with PickScore's tie protocol: by hand, and `mmalign eval accuracy` on a
local Pick-a-Pic v2 folder of rendered toy pairs scored by `toy:fidelity`."""

from __future__ import annotations

import json

import torch

from mmalign.cli import main
from mmalign.data.pickapic import write_pickapic
from mmalign.eval.accuracy import outcome_scores, tune_threshold
from mmalign.toy.render import render
from mmalign.toy.world import sample_prompts


def test_tie_protocol_by_hand():
    diff = torch.tensor([1.0, -1.0, 0.05, 0.05, 2.0], dtype=torch.float64)
    label = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5], dtype=torch.float64)
    # right; wrong; predicted tie vs a preference (0.5); both ties; a preference vs a tie (0.5)
    assert outcome_scores(diff, label, 0.1).tolist() == [1.0, 0.0, 0.5, 1.0, 0.5]
    assert outcome_scores(diff, label, 0.0).tolist() == [1.0, 0.0, 1.0, 0.5, 0.5]


def test_threshold_is_the_smallest_best():
    diff = torch.tensor([0.01, -0.02, 0.5, 0.6], dtype=torch.float64)
    label = torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64)
    assert tune_threshold(diff, label) == 0.02  # both ties caught, no preference lost
    assert tune_threshold(diff[2:], label[2:]) == 0.0


def _split(root, split, seed, n=12, ties=3):
    rows = []
    prompts = sample_prompts(n + ties + 1, "train", seed)
    for i in range(n):  # the prompt's rendering beats a rendering of another prompt
        rows.append({"prompt": prompts[i].text, "chosen": render(prompts[i]),
                     "rejected": render(prompts[i + 1])})  # fmt: skip
    for i in range(n, n + ties):  # a tie between two near-identical images
        img = render(prompts[i])
        rows.append({"prompt": prompts[i].text, "chosen": img, "rejected": img * 0.98,
                     "label": 0.5})  # fmt: skip
    rows.append({"prompt": "", "chosen": img, "rejected": img})  # no caption: skipped
    write_pickapic(rows, root, split, seed=seed)


def test_accuracy_command_on_a_local_pickapic_folder(tmp_path, capsys):
    root = tmp_path / "pp"
    _split(root, "validation", seed=1)
    _split(root, "test", seed=2)
    out = tmp_path / "acc.json"
    code = main(["eval", "accuracy", "--data", "pickapic:test", "--scorer", "toy:fidelity",
                 "--pickapic-root", str(root), "--out", str(out)])  # fmt: skip
    assert code == 0
    r = json.loads(out.read_text())
    assert r["tuned_on"]["data"] == "pickapic:validation" and r["tuned_on"]["pairs"] == 15
    assert r["pairs"] == 15 and r["tied_labels"] == 3
    assert r["skipped"] == 1 and r["skip_reasons"] == {"missing_caption": 1}
    assert r["threshold"] > 0  # the validation ties taught it a tie margin
    assert r["accuracy"] > r["accuracy_no_ties"]  # ... which the test ties reward
    assert r["accuracy"] >= 0.9
    assert "accuracy" in capsys.readouterr().out


def test_implicit_reward_accuracy_command(tmp_path, capsys):
    """The base against itself (a full-model reference: its own UNet loaded again) has margins
    of exactly 0, so accuracy 0.5; a trained LoRA (adapters-off reference) moves them."""
    from diffusion_helpers import save_tiny, tiny_config

    from mmalign.diffusion.data import open_pairs
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    tiny = save_tiny(tmp_path)
    run = tmp_path / "run"
    cfg = tiny_config(tiny, run, train={"max_steps": 2, "learning_rate": 1e-2})
    train(cfg, DiffusionRecipe)
    rows, _ = open_pairs("toy:style", "train", toy_options=dict(cfg.data.toy))
    write_pickapic([dict(r) for r in rows], tmp_path / "pp", "train")
    results = {}
    for name, model in (("still", [str(tiny), "--base", str(tiny)]), ("moved", [str(run)])):
        out = tmp_path / f"{name}.json"
        code = main(["eval", "accuracy", "--data", "pickapic:train", "--model", *model,
                     "--pickapic-root", str(tmp_path / "pp"), "--draws", "2", "--out", str(out),
                     "--scorer-device", "cpu"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        results[name] = json.loads(out.read_text())
    still, moved = results["still"], results["moved"]
    assert still["pairs"] == moved["pairs"] == 16 and moved["base"] == str(tiny)
    assert still["mean_margin"] == 0.0 and still["implicit_accuracy"] == 0.5
    assert moved["mean_margin"] != 0.0 and 0 <= moved["implicit_accuracy"] <= 1
    assert "implicit reward" in capsys.readouterr().out
    assert main(["eval", "accuracy", "--data", "pickapic:train", "--model", str(run),
                 "--scorer", "toy:style"]) == 2  # fmt: skip


def test_accuracy_on_a_folder_under_home(tmp_path, monkeypatch, capsys):
    """`--data ~/pairs` (no shell expands `~` after `=` or in quotes) reads the folder; without
    --tune-on or --threshold a folder gets a message naming them, not the pickapic/toy hint."""
    from mmalign.data.schema import write_pairs

    monkeypatch.setenv("HOME", str(tmp_path))
    prompts = sample_prompts(6, "train", 0)
    rows = [
        {"prompt": a.text, "chosen": render(a), "rejected": render(b), "label": 1.0}
        for a, b in zip(prompts, prompts[1:] + prompts[:1], strict=True)
    ]
    write_pairs(rows, tmp_path / "pairs", "image")
    out = tmp_path / "acc.json"
    code = main(["eval", "accuracy", "--data", "~/pairs", "--scorer", "toy:fidelity",
                 "--threshold", "0", "--out", str(out)])  # fmt: skip
    assert code == 0 and json.loads(out.read_text())["pairs"] == 6
    code = main(["eval", "accuracy", "--data", "~/pairs", "--scorer", "toy:fidelity"])
    assert code == 2 and "--tune-on" in capsys.readouterr().err
