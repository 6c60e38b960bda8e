"""`mmalign data diagnose` on diffusion pairs (issue 24: "diffusion data gets ranking and
implicit accuracy"): per-pair ranking by -MSE, implicit margins that match `mmalign eval
accuracy --model` on the same draws, no CHES (a --filter is refused), and a VLM model on image
pairs refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from diffusion_helpers import save_tiny, tiny_config

from mmalign.cli import main


def test_diffusion_pairs_get_ranking_and_implicit_accuracy(tmp_path, capsys):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    tiny = save_tiny(tmp_path)
    run = tmp_path / "run"
    train(tiny_config(tiny, run, train={"max_steps": 2, "learning_rate": 1e-2}), DiffusionRecipe)
    common = ["--max-samples", "8", "--draws", "2", "--device", "cpu"]
    out = tmp_path / "diag"
    code = main(["data", "diagnose", "toy:flaws", "--model", str(tiny), "--adapter", str(run),
                 "--out", str(out), *common])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "pairs.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == len(table) == 8 and "ranking and implicit" in summary["note"]
    assert "ches" not in table and "ln_ches" not in table
    assert list(table["ranking_correct"]) == list(table["score_chosen"] > table["score_rejected"])
    margin = (table["score_chosen"] - table["ref_score_chosen"]) - (
        table["score_rejected"] - table["ref_score_rejected"]
    )
    assert list(table["implicit_margin"]) == pytest.approx(list(margin), abs=1e-9)
    assert summary["ranking_accuracy"] == pytest.approx(table["ranking_correct"].mean())
    assert summary["implicit_accuracy"] == pytest.approx(table["implicit_correct"].mean())
    assert table["implicit_margin"].abs().max() > 0  # the LoRA moved the scores

    # the same draws as `mmalign eval accuracy --model`: the same mean implicit margin
    res = tmp_path / "implicit.json"
    assert main(["eval", "accuracy", "--data", "toy:flaws", "--model", str(run), "--max-rows",
                 "8", "--draws", "2", "--out", str(res)]) == 0  # fmt: skip
    assert json.loads(res.read_text())["mean_margin"] == pytest.approx(
        summary["mean_implicit_margin"], rel=1e-6, abs=1e-12
    )

    # no reference without --adapter: ranking only
    assert main(["data", "diagnose", "toy:flaws", "--model", str(tiny), "--out",
                 str(tmp_path / "plain"), *common]) == 0  # fmt: skip
    plain = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert "implicit_accuracy" not in plain and 0 <= plain["ranking_accuracy"] <= 1
    capsys.readouterr()

    # CHES filters do not apply; a VLM does not score image pairs
    code = main(["data", "diagnose", "toy:flaws", "--model", str(tiny), "--out", str(out),
                 "--filter", "ln_ches:keep_lowest=0.5"])  # fmt: skip
    assert code == 2 and "nothing to filter on" in capsys.readouterr().err
    code = main(["data", "diagnose", "toy:flaws:1", "--model", "toy:vlm", "--out", str(out)])
    assert code == 2 and "Give a diffusion --model" in capsys.readouterr().err


def _saved_image_pairs(folder):
    """A tiny `save_to_disk` dataset whose chosen / rejected are images (Image features)."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    colors = ((200, 0, 0), (0, 200, 0), (0, 0, 200), (9, 9, 9))
    images = [PILImage.new("RGB", (32, 32), c) for c in colors]
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    columns = {"prompt": ["a red square", "a green square"], "chosen": images[:2],
               "rejected": images[2:]}  # fmt: skip
    Dataset.from_dict(columns, features=features).save_to_disk(str(folder))
    return folder


def test_saved_image_pair_dataset_goes_to_the_diffusion_diagnosis(tmp_path, capsys):
    """A saved image-pair dataset names no toy kind or Pick-a-Pic split: it used to go down the
    VLM path and fail with "kind='text' but 'chosen' is Image(...)". Its columns route it."""
    from datasets import Dataset, DatasetDict

    from mmalign.vlm.diagnose_cli import has_image_pairs

    data = _saved_image_pairs(tmp_path / "pairs")
    assert has_image_pairs(str(data), "train")
    text = tmp_path / "text"
    Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}]).save_to_disk(str(text))
    assert not has_image_pairs(str(text), "train")
    assert not has_image_pairs("toy:vlm", "train") and not has_image_pairs("owner/name", "train")
    pick = Dataset.from_list([{"jpg_0": b"", "jpg_1": b"", "caption": "c"}])
    DatasetDict({"test": pick}).save_to_disk(str(tmp_path / "pick"))
    assert has_image_pairs(str(tmp_path / "pick"), "test")  # Pick-a-Pic's columns
    assert not has_image_pairs(str(tmp_path / "pick"), "train")  # no such split: VLM reader says

    # a VLM on image pairs: the diffusion path's clear refusal, not the VLM reader's type error
    out = str(tmp_path / "diag")
    code = main(["data", "diagnose", str(data), "--model", "toy:vlm", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and "holds image pairs" in err and "Give a diffusion --model" in err

    # a diffusion model: the diffusion diagnosis runs on the folder, end to end
    tiny = save_tiny(tmp_path)
    code = main(["data", "diagnose", str(data), "--model", str(tiny), "--out", out,
                 "--draws", "1", "--device", "cpu"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "diag" / "summary.json").read_text())
    assert summary["pairs"] == 2 and 0 <= summary["ranking_accuracy"] <= 1


def test_a_saved_folder_is_read_at_the_named_split(tmp_path):
    from datasets import DatasetDict, load_from_disk

    from mmalign.eval.accuracy import load_pairs

    one = load_from_disk(str(_saved_image_pairs(tmp_path / "one")))
    DatasetDict({"test": one}).save_to_disk(str(tmp_path / "dict"))
    rows, _ = load_pairs(str(tmp_path / "dict"), split="test")
    assert len(rows) == 2 and rows[0]["prompt"] == "a red square"
    with pytest.raises(ValueError, match=r"splits \['test'\]; data.split is 'train'"):
        load_pairs(str(tmp_path / "dict"))
