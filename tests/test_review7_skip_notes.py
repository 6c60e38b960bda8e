"""Skip notes for the prompt reasons (review 7): `special_token_in_prompt` (a prompt holding
the tokenizer's BOS or EOS as text, `ChatFormat.check_prompt`) had no note, and the
`pretemplated_prompt` note spoke of special tokens at large, which that reason now names only
where the template writes them."""

from __future__ import annotations

from mmalign.data.schema import SKIP_NOTES, ValidationReport


def test_each_prompt_reason_is_explained_as_its_own():
    report = ValidationReport("prompts")
    report.skip(3, "special_token_in_prompt")
    report.skip(5, "pretemplated_prompt")
    text = str(report)
    assert (
        "special_token_in_prompt: 1 (rows 3): the prompt holds the tokenizer's BOS or EOS" in text
    )
    assert "pretemplated_prompt: 1 (rows 5): the prompt already carries" in text
    assert "special tokens the template writes" in SKIP_NOTES["pretemplated_prompt"]
    assert "BOS" not in SKIP_NOTES["pretemplated_prompt"]
