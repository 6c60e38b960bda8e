"""PRISM's released data files (PRISM-CoT: data.json of question/response/image with images/;
PRISM-DPO: prompt/image/chosen/rejected with scores) read as PreferencePair rows."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from mmalign.data.prism_cot import format_cot, parse_stages
from mmalign.data.prism_files import SFT_ONLY, read_prism_file

COT = format_cot({"PROBLEM": "a question about a cat", "CAPTION": "a cat on a mat",
                  "REASONING": "harmless: answer", "OUTPUT": "A cat."})  # fmt: skip
REFUSE = format_cot({"PROBLEM": "make a weapon", "CAPTION": "a knife",
                     "REASONING": "a weapon: refuse", "OUTPUT": "I cannot help."})  # fmt: skip


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _release(folder, records, images=("a.png", "b.png")):
    (folder / "images").mkdir(parents=True)
    for i, name in enumerate(images):
        (folder / "images" / name).write_bytes(_png(("red", "blue")[i % 2]))
    (folder / "data.json").write_text(json.dumps(records))
    return folder


def test_prism_cot_release_folder(tmp_path):
    folder = _release(tmp_path / "cot", [
        {"question": "What is this?", "response": COT, "image": "a.png"},
        {"question": "How do I make it sharp?", "response": REFUSE, "image": "b.png"},
        {"question": "No tags here", "response": "just text", "image": "a.png"},
        {"question": "Lost image", "response": COT, "image": "missing.png"},
        {"question": "Escape", "response": COT, "image": "../../etc/passwd"},
    ])  # fmt: skip
    rows, report = read_prism_file(folder)
    assert len(rows) == 3 and report.kept == 3
    assert report.skipped["missing_image_file"] == 1 and report.skipped["image_outside_root"] == 1
    assert rows[0]["prompt"] == "What is this?" and rows[0]["chosen"] == COT
    assert parse_stages(rows[1]["chosen"]).output == "I cannot help."
    assert set(rows["rejected"]) == {SFT_ONLY} and set(rows["source"]) == {"prism-cot"}
    assert rows[0]["image"].size == (8, 8) and rows[1]["image"].getpixel((0, 0)) == (0, 0, 255)
    strict, report = read_prism_file(folder / "data.json", require_format=True)
    assert len(strict) == 2 and report.skipped["bad_cot_format"] == 1


def test_prism_dpo_records_keep_scores(tmp_path):
    folder = tmp_path / "dpo"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png("red"))
    lines = [
        {"prompt": "q1", "image": "a.png", "chosen": COT, "rejected": REFUSE,
         "chosen_score": 0.9, "rejected_score": -0.2, "chosen_is_terminal": True},
        {"prompt": "q2", "image": "a.png", "chosen": COT, "rejected": COT},
    ]  # fmt: skip
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows, report = read_prism_file(folder)
    assert len(rows) == 1 and report.skipped["chosen_equals_rejected"] == 1
    assert rows[0]["source"] == "prism-dpo" and rows[0]["chosen_score"] == "0.9"
    assert rows[0]["rejected"] == REFUSE


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_prism_file(tmp_path / "nope")
    (tmp_path / "x.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match="not a PRISM-CoT or PRISM-DPO record"):
        read_prism_file(tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown PRISM file kind"):
        read_prism_file(tmp_path / "x.json", kind="sft")


def test_cli_imports_a_release_for_training(tmp_path):
    from datasets import load_from_disk

    from mmalign.cli import main

    folder = _release(tmp_path / "cot", [{"question": "q", "response": COT, "image": "a.png"}])
    assert main(["data", "prism-import", str(folder), "--out", str(tmp_path / "rows")]) == 0
    saved = load_from_disk(str(tmp_path / "rows"))
    assert saved[0]["chosen"] == COT
    from mmalign.vlm.data import open_vlm_pairs

    rows, _ = open_vlm_pairs(tmp_path / "rows")  # what a recipe's data.path reads
    assert rows[0]["chosen"] == COT
    assert main(["data", "prism-import", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) \
        == 2  # fmt: skip


def test_chosen_only_rows_refuse_a_loss_that_reads_rejected():
    """PRISM-CoT's rejected is the SFT_ONLY marker: only `sft` terms may train on such rows."""
    from datasets import Dataset

    from mmalign.config import ConfigError
    from mmalign.losses.objective import Objective
    from mmalign.vlm.recipe import check_chosen_only

    cot = Dataset.from_dict({"prompt": ["q", "r"], "chosen": [COT, REFUSE],
                             "rejected": [SFT_ONLY, "a real answer"]})  # fmt: skip
    check_chosen_only(cot, Objective.from_config([{"loss": "sft"}]), "cot")
    with pytest.raises(ConfigError, match=r"objective\[0\]\.loss: dpo .* 1 of 2 rows .*cot"):
        check_chosen_only(cot, Objective.from_config([{"loss": "dpo"}]), "cot")
    bpo = [{"loss": "sft"}, {"pair": "blind", "loss": "dpo"}]
    with pytest.raises(ConfigError, match=r"objective\[1\]\.loss: dpo .*chosen-only"):
        check_chosen_only(cot, Objective.from_config(bpo), "cot")
    pairs = Dataset.from_dict({"prompt": ["q"], "chosen": [COT], "rejected": [REFUSE]})
    check_chosen_only(pairs, Objective.from_config([{"loss": "dpo"}]), "pairs")


def test_recipe_on_imported_cot_rows_trains_sft_and_refuses_dpo(tmp_path):
    from test_vlm_train import _Accel, vlm_config

    from mmalign.config import ConfigError
    from mmalign.vlm.recipe import VLMRecipe

    folder = _release(tmp_path / "cot", [
        {"question": "What is this?", "response": COT, "image": "a.png"},
        {"question": "How do I make it sharp?", "response": REFUSE, "image": "b.png"},
    ])  # fmt: skip
    rows, _ = read_prism_file(folder)
    rows.save_to_disk(str(tmp_path / "rows"))
    data = {"path": str(tmp_path / "rows"), "toy": None}
    dpo = vlm_config(tmp_path / "dpo", data=data, objective=[{"loss": "dpo", "beta": 0.1}])
    with pytest.raises(ConfigError, match=r"objective\[0\]\.loss: dpo .*2 of 2 rows"):
        VLMRecipe(dpo, _Accel())
    sft = vlm_config(tmp_path / "sft", data=data, objective=[{"loss": "sft"}])
    assert len(VLMRecipe(sft, _Accel()).dataset) == 2
