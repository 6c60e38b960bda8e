"""VLM training rows: one numbering for every skipped row, BPO blind answers only for rows kept.

Before: rows the data's validation refused were named by their index in the data as read, the
rows the collator then skipped (`too_long`, ...) by their position among the rows validation
kept, so once validation dropped a row the second message named the wrong row ("row 4" for
row 5 of the file). And the blind answers (a generate each) were made for every row without
one before any row was checked, so a row skipped as too long cost a generate all the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from test_vlm_train import _Accel, vlm_config

from mmalign.toy.cache import toy_pairs
from mmalign.vlm import blind
from mmalign.vlm.recipe import VLMRecipe, _digest

BPO = [{"pair": "main", "loss": "dpo"}, {"pair": "blind", "loss": "dpo"}]
DROPPED, LONG = 1, 5  # source rows: refused by validation (no chosen), over vlm.max_length


def _rows(folder: Path, edits: dict[int, dict[str, Any]]) -> str:
    """toy:safety's 8 rows with `edits` (row -> columns), saved as a dataset."""
    src = load_from_disk(str(toy_pairs("safety", {"n": 8})))
    out = src.map(lambda r, i: edits.get(i, {}), with_indices=True, features=src.features)
    out.save_to_disk(str(folder))
    return str(folder)


@pytest.fixture
def data(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    edits = {DROPPED: {"chosen": None}, LONG: {"chosen": "word " * 400}}
    return _rows(tmp_path / "rows", edits)


@pytest.fixture
def prompts(monkeypatch) -> list[list[str]]:
    """The prompts of each generation of blind answers (a short answer for each)."""
    seen: list[list[str]] = []

    def stub(model: Any, processor: Any, given: list[str], **kw: Any) -> blind.BlindAnswers:
        seen.append(list(given))
        return blind.BlindAnswers([f"blind {i}" for i in range(len(given))], [False] * len(given))

    monkeypatch.setattr(blind, "blind_responses", stub)
    return seen


def _recipe(tmp_path: Path, data: str, objective: Any = None, **vlm: Any) -> VLMRecipe:
    saved = {"path": data, "split": "train", "toy": None}
    cfg = vlm_config(tmp_path / "run", data=saved, vlm={"max_length": 256, **vlm},
                     **({"objective": objective} if objective else {}))  # fmt: skip
    return VLMRecipe(cfg, _Accel())


def test_a_long_row_after_a_refused_one_is_named_by_its_source_row(tmp_path, data, capsys):
    recipe = _recipe(tmp_path, data)
    assert recipe.report.examples == {"missing_chosen": [DROPPED], "too_long": [LONG]}
    assert (recipe.report.total, recipe.report.kept) == (8, 6)
    out = capsys.readouterr().out
    assert f"1 too_long (over vlm.max_length=256): row {LONG}" in out
    # the rows kept are still the dataset's: no source row of the two skipped among them
    kept = [recipe.rows[i]["chosen"] for i, _ in (recipe.dataset[k] for k in range(6))]
    assert "word " * 400 not in kept


def test_strict_names_the_source_row(tmp_path, data):
    with pytest.raises(ValueError, match=rf"^row {LONG}: \d+ tokens exceed vlm.max_length 256"):
        _recipe(tmp_path, data, strict=True)


def test_a_json_file_names_its_records(tmp_path, monkeypatch, capsys):
    # the readers' path (`collect`), max_samples included: record 0 has no chosen answer
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    records = [{"prompt": f"question {i}?", "chosen": "yes", "rejected": "no"} for i in range(6)]
    records[0]["chosen"] = ""
    records[3]["chosen"] = "word " * 400
    (tmp_path / "pairs.json").write_text(json.dumps(records))
    recipe = _recipe(tmp_path, str(tmp_path / "pairs.json"))
    assert recipe.report.examples == {"missing_chosen": [0], "too_long": [3]}
    assert "too_long (over vlm.max_length=256): row 3" in capsys.readouterr().out


def test_bpo_generates_no_blind_answer_for_a_skipped_row(tmp_path, data, prompts, capsys):
    recipe = _recipe(tmp_path, data, BPO)
    src = load_from_disk(str(toy_pairs("safety", {"n": 8})))["prompt"]
    assert prompts == [[p for i, p in enumerate(src) if i not in (DROPPED, LONG)]]
    assert recipe.describe()["blind"]["generated"] == 6
    out = capsys.readouterr().out
    # every row dropped is counted, the validation's (missing_chosen) with the collator's
    assert "generated for 6 rows" in out and "skipped 2 of 8 rows: " in out
    assert "1 missing_chosen: row 1" in out and "1 too_long" in out
    blinds = recipe.dataset.extra["blind"]
    assert [b is not None for b in blinds] == [i != LONG - 1 for i in range(7)]
    again = _recipe(tmp_path, data, BPO)  # read back from the cache: no generate
    assert len(prompts) == 1 and again.dataset.extra["blind"] == blinds


def test_strict_bpo_raises_before_any_generate(tmp_path, data, prompts):
    with pytest.raises(ValueError, match=rf"^row {LONG}: "):
        _recipe(tmp_path, data, BPO, strict=True)
    assert prompts == []


def test_a_blind_answer_too_long_is_still_skipped_after_it_is_generated(tmp_path, monkeypatch,
                                                                         capsys):  # fmt: skip
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    data = _rows(tmp_path / "rows", {DROPPED: {"chosen": None}})

    def long_for_third(model: Any, processor: Any, given: list[str], **kw: Any) -> Any:
        answers = ["word " * 400 if i == 2 else "no" for i in range(len(given))]
        return blind.BlindAnswers(answers, [False] * len(given))

    monkeypatch.setattr(blind, "blind_responses", long_for_third)
    recipe = _recipe(tmp_path, data, BPO)
    # the third row generated for is source row 3 (row 1 was refused by validation)
    assert recipe.report.examples["too_long"] == [3]
    out = capsys.readouterr().out  # (with the row validation refused: every row dropped)
    assert "skipped 2 of 8 rows: " in out and "1 missing_chosen: row 1" in out
    assert "1 too_long (over vlm.max_length=256): row 3" in out


def test_the_cache_key_is_the_one_from_before_when_no_row_is_skipped(tmp_path, monkeypatch,
                                                                      prompts):  # fmt: skip
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    cfg = vlm_config(tmp_path / "run", objective=BPO, data={"toy": {"n": 4}})
    recipe = VLMRecipe(cfg, _Accel())
    old = _digest(recipe.vlm.weights_key, recipe.rows._fingerprint, 32, "bos1", "missing",
                  "capped")  # fmt: skip
    assert [p.stem for p in (tmp_path / "cache" / "vlm-blind").glob("*.json")] == [old]
    assert len(prompts) == 1 and len(prompts[0]) == 4
