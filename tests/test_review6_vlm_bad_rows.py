"""Rows the VLM collator cannot use are skipped and counted when the recipe opens the data,
never met mid-run; errors and precomputed scores name the dataset's row; the precomputed
reference's cache key changed with the completion text (chat_format's answer frame).

Before: without `vlm.max_length` no row was checked, so an rDPO row missing its
`retrieved_image` stopped training after its first steps ("pair 'visual' needs the column
'retrieved_image', which is empty"); with it, that error escaped the length check unnamed.
Items of `VLMRows` were positions among the kept rows, so once a row was skipped the messages
named the wrong row; and reference scores cached before commit 4a9b719 (short answers inside
the end-of-turn text completed differently) were read for the new completions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from test_vlm_train import _Accel, vlm_config

from mmalign.data.cache import cache_root
from mmalign.toy.cache import toy_pairs
from mmalign.train.config import Config
from mmalign.train.loop import train
from mmalign.vlm.chat_format import RowError
from mmalign.vlm.recipe import VLMRecipe

RDPO = [
    {"pair": "main", "loss": "dpo", "beta": 0.1},
    {"pair": "visual", "loss": "dpo", "beta": 0.1},
]
BAD = 9  # the row without a retrieved image


@pytest.fixture
def bad_rows(tmp_path) -> str:
    """toy:hallucination (16 rDPO rows) with row 9's retrieved image missing."""
    src = load_from_disk(str(toy_pairs("hallucination", {"n": 16})))
    bad = src.map(lambda r, i: {"retrieved_image": None if i == BAD else r["retrieved_image"]},
                  with_indices=True, features=src.features)  # fmt: skip
    folder = tmp_path / "rows"
    bad.save_to_disk(str(folder))
    return str(folder)


def saved(path: str) -> dict[str, Any]:
    return {"path": path, "split": "train", "toy": None}


def rdpo_config(out: Path, data: str, **vlm: Any) -> Config:
    return vlm_config(out, objective=RDPO, data=saved(data), vlm=vlm,
                      train={"batch_size": 4, "max_steps": 4})  # fmt: skip


@pytest.mark.parametrize("max_length", [None, 512])
def test_a_row_missing_its_retrieved_image_is_skipped_and_counted(tmp_path, bad_rows, capsys,
                                                                   max_length):  # fmt: skip
    recipe = VLMRecipe(rdpo_config(tmp_path, bad_rows, max_length=max_length), _Accel())
    assert recipe.report.skipped == {"missing_retrieved_image": 1}
    assert recipe.report.examples["missing_retrieved_image"] == [BAD]
    assert (recipe.report.total, recipe.report.kept) == (16, 15)
    assert recipe.describe()["skipped"] == {"missing_retrieved_image": 1}
    ids = [recipe.dataset[k][0] for k in range(len(recipe.dataset))]
    assert ids == [i for i in range(16) if i != BAD]
    out = capsys.readouterr().out
    assert f"skipped 1 of 16 rows: 1 missing_retrieved_image: row {BAD}" in out


@pytest.mark.parametrize("max_length", [None, 512])
def test_strict_raises_naming_the_dataset_row(tmp_path, bad_rows, max_length):
    cfg = rdpo_config(tmp_path, bad_rows, max_length=max_length, strict=True)
    with pytest.raises(RowError, match=rf"^row {BAD}: pair 'visual' needs the column "
                       "'retrieved_image', which is empty$") as err:  # fmt: skip
        VLMRecipe(cfg, _Accel())
    assert err.value.reason == "missing_retrieved_image" and err.value.row == BAD


def test_training_goes_on_with_the_other_rows(tmp_path, bad_rows):
    out = tmp_path / "run"
    train(rdpo_config(out, bad_rows), VLMRecipe)  # 4 steps of 4: every row drawn
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all("visual/dpo/loss" in m for m in metrics)
    run = json.loads((out / "mmalign_run.json").read_text())
    assert run["rows"] == 15 and run["skipped"] == {"missing_retrieved_image": 1}


def test_collate_errors_name_the_dataset_row_after_a_skip(tmp_path, bad_rows):
    recipe = VLMRecipe(rdpo_config(tmp_path, bad_rows), _Accel())
    row_id, row = recipe.dataset[BAD]  # position 9 holds row 10: row 9 was skipped
    assert row_id == BAD + 1
    assert recipe.collate([recipe.dataset[BAD]]).rows == [BAD + 1]
    with pytest.raises(RowError, match=rf"^row {BAD + 1}: pair 'visual' needs"):
        recipe.collate([(row_id, {**row, "retrieved_image": None})])


def test_bpo_extra_rows_name_the_row_they_come_from(tmp_path):
    rows = load_from_disk(str(toy_pairs("safety", {"n": 6})))
    rows = rows.map(lambda r: {"blind": "a plain answer"})  # the data's own: nothing generated
    rows.save_to_disk(str(tmp_path / "rows"))
    cfg = vlm_config(tmp_path / "run", data=saved(str(tmp_path / "rows")),
                     objective=[{"pair": "main", "loss": "dpo"}, {"pair": "blind", "loss": "dpo"}],
                     vlm={"bpo_form": "extra_rows"})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    assert len(recipe.dataset) == 12
    assert [recipe.dataset[k][0] for k in range(12)] == [*range(6), *range(6)]
    _, blind = recipe.dataset[8]
    with pytest.raises(RowError, match=r"^row 2: the prompt has 2 <image> placeholders"):
        recipe.collate([(2, {**blind, "prompt": "<image> <image> " + blind["prompt"]})])


def test_reference_scores_cached_before_the_answer_frame_are_not_read(tmp_path, monkeypatch):
    from mmalign.vlm.collate import processor_settings
    from mmalign.vlm.recipe import _digest

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    plain = VLMRecipe(vlm_config(tmp_path / "a"), _Accel())  # the rows and model, no reference
    processor = plain.vlm.processor
    # the key of the commit before: completions of short answers were another text then
    old = _digest(plain.vlm.weights_key, plain.rows._fingerprint, ["main"], None, {}, None, False,
                  _digest(getattr(processor, "chat_template", None)),
                  processor_settings(processor), "eos-closed")  # fmt: skip
    stale = cache_root() / "vlm-reference" / f"{old}.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps([[0, "shown", "an old completion", 5.0]]))
    recipe = VLMRecipe(vlm_config(tmp_path / "b", vlm={"reference": "precomputed"}), _Accel())
    scores = recipe.scorer.reference_scores
    assert scores is not None and (0, "shown", "an old completion") not in scores
    assert len(scores) >= 2 * len(recipe.dataset) and all(s < 0 for s in scores.values())
    assert len(list(stale.parent.glob("*.json"))) == 2  # scored again, under a key of its own
