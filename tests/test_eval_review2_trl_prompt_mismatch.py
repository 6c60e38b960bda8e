"""TRL implicit-prompt rows whose `chosen` and `rejected` conversations differ before their last
message have a prompt, just not one shared by both answers: they were counted as
`missing_prompt`, which points at the wrong fix. They are `prompt_mismatch` now (the name
ReAlign's reader uses for the same case), explained in the printed report; a conversation
with no message before its answer is still `missing_prompt`."""

from __future__ import annotations

from mmalign.data.trl_format import trl_pairs


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def test_differing_implicit_prompts_are_a_prompt_mismatch():
    records = [
        {"chosen": [*_user("Is it red?"), *_answer("yes")],
         "rejected": [*_user("Is it red?"), *_answer("no")]},  # kept
        {"chosen": [*_user("Is it red?"), *_answer("yes")],
         "rejected": [*_user("Is it blue?"), *_answer("no")]},  # two prompts
        {"chosen": [*_user("Is it red?"), *_answer("yes")],
         "rejected": _answer("no")},  # `rejected` has no prompt: it differs from chosen's
        {"chosen": _answer("yes"), "rejected": _answer("no")},  # no prompt at all
    ]  # fmt: skip
    ds, report = trl_pairs(records, image_root=None)
    assert len(ds) == 1 and ds["prompt"] == ["Is it red?"]
    assert report.skipped == {"prompt_mismatch": 2, "missing_prompt": 1}
    assert report.examples["prompt_mismatch"] == [1, 2]
    text = str(report)
    line = next(x for x in text.splitlines() if "prompt_mismatch" in x)
    assert "differ before their last message" in line
    assert "missing_prompt: 1 (rows 3)" in text
