"""Review 8: a VLM run names rows as its data file does, and records its pairs as a diffusion
run does.

1. `VLMRecipe.collate` raised "row 0: pair 'visual' needs the column 'retrieved_image'..."
   naming the row's position in the opened data, while every check of the rows names the row
   of the data as read (`ValidationReport.source_row`): once validation dropped row 0, "row 0"
   was the file's row 1. The batch's `rows` (the precomputed reference scores' key) stay the
   opened ids; only the messages name the source row.
2. `mmalign_run.json` of a VLM run had no `ties: {dropped, kept}` and, for toy data, no
   `build_skipped` (toy:hallucination leaves out items as `no_similar_image`), which a
   diffusion run records (`data.run_record.pairs_record`). No toy dataset is built here: the
   toy run reads a folder of hand-made rows and summary.json put where the build would go.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import Dataset
from test_vlm_train import _Accel, vlm_config
from vlm_helpers import pair_rows

from mmalign.vlm.chat_format import RowError
from mmalign.vlm.recipe import VLMRecipe

RDPO = [
    {"pair": "main", "loss": "dpo", "beta": 0.1},
    {"pair": "visual", "loss": "dpo", "beta": 0.1},
]


def _recipe(tmp_path: Path, data: dict[str, Any], **sections: Any) -> VLMRecipe:
    return VLMRecipe(vlm_config(tmp_path / "run", data=data, **sections), _Accel())


@pytest.fixture
def first_row_dropped(tmp_path) -> str:
    """Three rDPO rows whose row 0 validation refuses (no chosen answer): opened row 0 is the
    file's row 1."""
    a, b = pair_rows()
    Dataset.from_list([{**a, "chosen": ""}, a, b]).save_to_disk(str(tmp_path / "rows"))
    return str(tmp_path / "rows")


def test_collate_errors_name_the_source_row(tmp_path, first_row_dropped):
    data = {"path": first_row_dropped, "split": "train", "toy": None}
    recipe = _recipe(tmp_path, data, objective=RDPO)
    assert recipe.report.examples["missing_chosen"] == [0]
    opened, row = recipe.dataset[0]
    assert opened == 0 and row["chosen"] == pair_rows()[0]["chosen"]  # the file's row 1
    # the batch's ids are the opened rows' (the precomputed reference scores' key)
    assert recipe.collate([recipe.dataset[0], recipe.dataset[1]]).rows == [0, 1]
    bad = (opened, {**row, "retrieved_image": None})
    with pytest.raises(RowError, match=r"^row 1: pair 'visual' needs the column "
                       "'retrieved_image', which is empty$") as err:  # fmt: skip
        recipe.collate([recipe.dataset[1], bad])
    assert err.value.row == 1 and err.value.reason == "missing_retrieved_image"
    # a row over max_length (the checks skip those; were one to come) names it so too
    recipe.collator.max_length = 8
    with pytest.raises(ValueError, match=r"^row 2: \d+ tokens exceed max_length 8"):
        recipe.collate([recipe.dataset[1]])


def test_run_record_has_ties_and_no_build_for_other_data(tmp_path, first_row_dropped):
    data = {"path": first_row_dropped, "split": "train", "toy": None}
    described = _recipe(tmp_path, data).describe()
    assert described["rows"] == 2
    assert described["skipped"] == {"missing_chosen": 1}
    assert described["ties"] == {"dropped": 0, "kept": 0}
    assert "build_skipped" not in described  # not toy data: no build to speak of


TOY = {"n": 6}


@pytest.fixture
def toy_hallucination(tmp_path, monkeypatch) -> None:
    """toy:hallucination with TOY, as if built: three rows (row 1 a tie kept at label 0.5,
    row 2 without a chosen answer) and the summary.json of a build that left out 4 items
    without a similar image."""
    from mmalign.toy.cache import toy_data_folder

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    folder = toy_data_folder("hallucination", TOY)
    a, b = pair_rows()
    rows = [{**a, "label": 1.0}, {**b, "label": 0.5}, {**a, "chosen": "", "label": 1.0}]
    Dataset.from_list(rows).save_to_disk(str(folder / "pairs"))
    summary = {"rows": 3, "skipped": {"no_similar_image": 4}, "ties": {"dropped": 0, "kept": 1}}
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize("max_samples", [None, 2])
def test_toy_run_records_what_its_build_left_out(tmp_path, toy_hallucination, capsys,
                                                 max_samples):  # fmt: skip
    data = {"path": "toy:hallucination", "split": "train", "toy": TOY, "max_samples": max_samples}
    capsys.readouterr()
    described = _recipe(tmp_path, data).describe()
    assert described["build_skipped"] == {"no_similar_image": 4}  # the whole build's
    assert described["ties"] == {"dropped": 0, "kept": 1}  # row 1, trained on at label 0.5
    # this run's rows: all three read, row 2 skipped; or the first two, none skipped
    skipped = {"missing_chosen": 1} if max_samples is None else {}
    assert described["skipped"] == skipped and described["rows"] == 2
    json.dumps(described)  # as mmalign_run.json holds it (train/loop.py)
    line = next(x for x in capsys.readouterr().out.splitlines() if "left out" in x)
    assert "building toy:hallucination left out 4 candidate pairs (no_similar_image: 4)" in line
    prefix = "over the whole build; data.max_samples: this run trains on the first 2 of its 3"
    assert (prefix in line) if max_samples else "whole build" not in line
