"""A dense reward head as the scorer of `mmalign eval winrate` and `mmalign eval accuracy`
(`dense:<path>`): a freshly initialised toy head, saved with `save_pretrained`, on tiny SD
pipelines and on a local Pick-a-Pic folder of rendered toy pairs."""

from __future__ import annotations

import json

import numpy as np
import torch
from diffusion_helpers import save_tiny
from PIL import Image

from mmalign.cli import main
from mmalign.rewards import get_scorer
from mmalign.rewards.dense import DenseRewardModel


def _toy_head(tmp_path, seed: int = 0):
    """As tests/test_dense_reward.py: a small random toy-backbone head, saved."""
    torch.manual_seed(seed)
    return DenseRewardModel.from_backbone("toy", dim=32, depth=1, heads=2).save_pretrained(
        tmp_path / "head"
    )


def test_eval_winrate_with_a_dense_scorer(tmp_path, capsys):
    """Two tiny random SD pipelines (no training): the dense head's overall score of every
    saved image is what `dense:<path>` gives it, and the statistics follow from them."""
    from mmalign.diffusion import tiny_sd_pipeline

    head = _toy_head(tmp_path)
    base = save_tiny(tmp_path)
    tuned = tmp_path / "tiny-sd-seed1"
    tiny_sd_pipeline(seed=1).save_pretrained(tuned)
    name = f"dense:{head}"
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--base", str(base), "--tuned", str(tuned), "--n", "4",
                 "--steps", "2", "--scorers", f"toy:fidelity,{name}", "--scorer-device", "cpu",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert name in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["scorers"]) == {"toy:fidelity", name}
    r = results["scorers"][name]
    assert r["model"] == name and r["n"] == r["prompts"] == 4
    assert r["wins"] + r["ties"] + r["losses"] == 4
    assert r["win_rate"] == (r["wins"] + 0.5 * r["ties"]) / 4
    assert 0 <= r["ci95"][0] <= r["win_rate"] <= r["ci95"][1] <= 1
    assert "at_ceiling" not in r  # a dense head has no known best score
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    scorer = get_scorer(name, device="cpu")
    for side in ("base", "tuned"):
        saved = [np.asarray(Image.open(out / row[f"{side}_image"]).convert("RGB")) for row in rows]
        images = torch.from_numpy(np.stack(saved)).permute(0, 3, 1, 2).float() / 255
        direct = scorer.score(images, [row["prompt"] for row in rows]).double()
        reported = torch.tensor([row["scores"][name][side] for row in rows], dtype=torch.float64)
        torch.testing.assert_close(reported, direct, atol=1e-6, rtol=0)
        assert bool(((reported >= 0) & (reported <= 1)).all())  # `overall` is in [0, 1]
        assert abs(r[f"{side}_mean"] - float(direct.mean())) < 1e-6
    base_scores = [row["scores"][name]["base"] for row in rows]
    tuned_scores = [row["scores"][name]["tuned"] for row in rows]
    assert len(set(base_scores + tuned_scores)) > 1  # the head tells the images apart
    wins = sum(t > b for b, t in zip(base_scores, tuned_scores, strict=True))
    assert r["wins"] == wins


def _pairs(root, split: str, seed: int, n: int = 6, ties: int = 2) -> None:
    """A Pick-a-Pic split of rendered toy pairs, as tests/test_eval_accuracy.py writes: `n`
    preferences, `ties` tied pairs and one row without a caption (skipped)."""
    from mmalign.data.pickapic import write_pickapic
    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts

    prompts = sample_prompts(n + ties + 1, "train", seed)
    rows = [{"prompt": prompts[i].text, "chosen": render(prompts[i]),
             "rejected": render(prompts[i + 1])} for i in range(n)]  # fmt: skip
    for i in range(n, n + ties):
        image = render(prompts[i])
        rows.append({"prompt": prompts[i].text, "chosen": image, "rejected": image * 0.98,
                     "label": 0.5})  # fmt: skip
    rows.append({"prompt": "", "chosen": image, "rejected": image})
    write_pickapic(rows, root, split, seed=seed)


def _tie_protocol(diff: list[float], label: list[float], threshold: float) -> float:
    """PickScore's tie protocol, by hand: 1 right, 0.5 when exactly one side is a tie."""
    total = 0.0
    for d, y in zip(diff, label, strict=True):
        predicted_tie, human_tie = abs(d) <= threshold, y == 0.5
        if predicted_tie or human_tie:
            total += 1.0 if predicted_tie == human_tie else 0.5
        else:
            total += 1.0 if d > 0 else 0.0
    return total / len(diff)


def test_eval_accuracy_with_a_dense_scorer(tmp_path, capsys):
    from mmalign.eval.accuracy import load_pairs

    head = _toy_head(tmp_path)
    root = tmp_path / "pp"
    _pairs(root, "validation", seed=1)
    _pairs(root, "test", seed=2)
    name = f"dense:{head}"
    out = tmp_path / "acc.json"
    code = main(["eval", "accuracy", "--data", "pickapic:test", "--scorer", name,
                 "--pickapic-root", str(root), "--scorer-device", "cpu", "--batch-size", "4",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["scorer"] == name and r["data"] == "pickapic:test"
    assert r["pairs"] == 8 and r["tied_labels"] == 2
    assert r["skipped"] == 1 and r["skip_reasons"] == {"missing_caption": 1}
    assert r["tuned_on"]["data"] == "pickapic:validation" and r["tuned_on"]["pairs"] == 8
    assert 0 <= r["accuracy"] <= 1 and 0 <= r["accuracy_no_ties"] <= 1
    assert r["threshold"] >= 0
    # the reported numbers, recomputed from the head's own scores of the pairs read back
    scorer = get_scorer(name, device="cpu")

    def diffs(split: str) -> tuple[list[float], list[float]]:
        rows, _ = load_pairs(f"pickapic:{split}", pickapic_root=str(root))
        d = []  # in the command's batches of 4: the tuned threshold is one of these |diff|s,
        for start in range(0, len(rows), 4):  # so a last-bit change would move a pair across
            batch = rows[start : start + 4]
            chosen = scorer.score(batch["chosen"], batch["prompt"])
            d += (chosen - scorer.score(batch["rejected"], batch["prompt"])).double().tolist()
        return d, [1.0 if y is None else float(y) for y in rows["label"]]

    diff, label = diffs("test")
    assert len(diff) == 8 and len(set(diff)) == 8  # the head scores every pair differently
    assert abs(r["accuracy"] - _tie_protocol(diff, label, r["threshold"])) < 1e-9
    assert abs(r["accuracy_no_ties"] - _tie_protocol(diff, label, 0.0)) < 1e-9
    val_diff, val_label = diffs("validation")
    tuned = r["tuned_on"]["accuracy_at_threshold"]
    assert abs(tuned - _tie_protocol(val_diff, val_label, r["threshold"])) < 1e-9
    assert tuned >= _tie_protocol(val_diff, val_label, 0.0)  # tuning never does worse than 0
