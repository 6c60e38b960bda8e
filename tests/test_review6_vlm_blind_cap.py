"""BPO blind answers cut by `vlm.blind_max_new_tokens` were scored as finished turns (toy-vlm,
cap 4: 'The secret code is' scored as ' The secret code is</s>', an end the model never
produced) and counted nowhere. They are now marked capped when generated (no end of sequence
among the new tokens), scored without the end-of-turn token, counted in a log line and in
`describe()` (`mmalign_run.json`), and the blind-answer cache records which were capped (a new
key component: an entry from before, answers only, is never read as answers that all ended)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_vlm_train import _Accel, vlm_config

from mmalign.vlm import blind
from mmalign.vlm.recipe import VLMRecipe, _digest

BPO = [{"pair": "main", "loss": "dpo"}, {"pair": "blind", "loss": "dpo"}]


def _recipe(tmp_path, cap: int = 4) -> VLMRecipe:
    cfg = vlm_config(tmp_path / "run", objective=BPO, data={"toy": {"n": 8}},
                     vlm={"blind_max_new_tokens": cap})  # fmt: skip
    return VLMRecipe(cfg, _Accel())


@pytest.fixture
def calls(tmp_path, monkeypatch) -> list[int]:
    """The prompts each generation of blind answers was given (a fresh cache per test)."""
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    seen: list[int] = []
    real = blind.blind_responses

    def counted(model: Any, processor: Any, prompts: list[str], **kw: Any) -> Any:
        seen.append(len(prompts))
        return real(model, processor, prompts, **kw)

    monkeypatch.setattr(blind, "blind_responses", counted)
    return seen


def test_generation_marks_the_answers_the_cap_cut():
    from datasets import load_from_disk

    from mmalign.toy.cache import toy_pairs
    from mmalign.vlm.load import load_vlm

    vlm = load_vlm("toy:vlm")
    prompts = load_from_disk(str(toy_pairs("safety", {"n": 8})))["prompt"]
    short = blind.blind_responses(vlm.model, vlm.processor, prompts, max_new_tokens=4)
    full = blind.blind_responses(vlm.model, vlm.processor, prompts, max_new_tokens=64)
    assert not any(full.capped)
    # capped exactly where the uncapped answer goes on past the cap
    assert short.capped == [a != b for a, b in zip(short.answers, full.answers, strict=True)]
    assert 0 < short.n_capped < len(prompts)


def test_capped_answers_are_scored_unfinished_and_counted(tmp_path, calls, capsys):
    recipe = _recipe(tmp_path)
    assert recipe.blind is not None and calls == [8]
    capped = recipe.blind.n_capped
    assert 0 < capped < 8
    report = recipe.describe()["blind"]
    assert report == {"generated": 8, "capped": capped, "max_new_tokens": 4}
    assert f"{capped} cut by vlm.blind_max_new_tokens=4" in capsys.readouterr().out
    eos = recipe.vlm.tokenizer.eos_token
    seen = set()
    for i in range(len(recipe.dataset)):
        _, row = recipe.dataset[i]
        batch = recipe.collate([recipe.dataset[i]])
        for _, _, text in batch.sequence_keys:
            answer = text.removesuffix(eos).strip()
            if answer == row["blind"] and answer != row["chosen"]:
                cut = recipe.blind.capped[recipe.blind.answers.index(answer)]
                assert text.endswith(eos) != cut, (text, cut)  # closed unless capped
                seen.add(cut)
            elif answer == row["chosen"]:
                assert text.endswith(eos)  # the data's answers end their turn as before
    assert seen == {True, False}


def test_a_cache_hit_reports_the_same_count(tmp_path, calls):
    first = _recipe(tmp_path)
    again = _recipe(tmp_path)
    assert calls == [8]  # read back, not generated again
    assert again.blind == first.blind
    assert again.describe()["blind"] == first.describe()["blind"]


def test_an_entry_from_before_the_capped_flags_is_not_read(tmp_path, calls):
    recipe = _recipe(tmp_path)
    # the key entries had before they recorded which answers were capped (CPU float32)
    old = _digest(recipe.vlm.weights_key, recipe.rows._fingerprint, 4, "bos1", "missing")
    entries = tmp_path / "cache" / "vlm-blind"
    assert not (entries / f"{old}.json").exists()
    (entries / f"{old}.json").write_text(json.dumps(["stale"] * 8))
    again = _recipe(tmp_path)
    assert "stale" not in again.dataset.extra["blind"]
    assert again.blind == recipe.blind


def test_a_damaged_entry_is_generated_again(tmp_path, calls):
    recipe = _recipe(tmp_path)
    (entry,) = (tmp_path / "cache" / "vlm-blind").glob("*.json")
    entry.write_text(entry.read_text()[:20])  # cut short
    again = _recipe(tmp_path)
    assert calls == [8, 8] and again.blind == recipe.blind


def test_data_answers_with_a_capped_text_are_counted():
    # the collator's open_end sees an answer's text alone: a data answer equal to a capped blind
    # answer is scored unfinished too, and the report says how many there are
    answers = blind.BlindAnswers(["The secret code is", "no"], [True, False])
    assert answers.summary(4, ["no", "yes"]) == {"generated": 2, "capped": 1, "max_new_tokens": 4}
    report = answers.summary(4, ["The secret code is", "no"])
    assert report["capped_text_in_data"] == 1
    assert "1 answers of the data have a capped answer's text" in blind.summary_line(report)
    opened = blind.open_or_capped(None, answers.open_texts())
    assert opened("The secret code is") and not opened("no")
