"""The prompt check of training rows, at generation too, and what a BOS / EOS in a prompt means
(review 7).

1. `ChatFormat.check_prompt` refused a prompt already in the chat template's format for
   training rows only: `mmalign chat` and `mmalign eval vlm` templated such a prompt twice
   ('USER: USER: <image>... ASSISTANT: ASSISTANT:'). `chat` now refuses it (exit 2, before the
   model loads); `eval vlm` leaves such rows out of its rates, counted under `dropped`.
2. A question about HTML's `<s>` tag was refused as "already in the chat template's format".
   The refusal stands (the tokenizer reads the text `<s>` as its BOS token: one special token,
   as every tiny family's does here), but it is its own reason, `special_token_in_prompt`, and
   says what was found and why.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from device_helpers import Stop, recorder
from test_review6_vlm_collate import family_processors

from mmalign.cli import main
from mmalign.vlm.chat_format import ChatFormat, RowError, screen_prompts

TEMPLATED = "USER: <image>\nWhat color is the shape? ASSISTANT:"


@pytest.fixture(scope="module")
def processors():
    return family_processors()


# (family, a raw question holding the tokenizer's BOS or EOS as text, the token, its role)
SPECIAL = [
    ("toy", "What does the HTML tag <s> do?", "<s>", "BOS"),
    ("llava", "What does the HTML tag <s> do?", "<s>", "BOS"),
    ("llava_next", "Is </s> a closing tag?", "</s>", "EOS"),
    ("qwen", "What does <|im_end|> mean in ChatML?", "<|im_end|>", "EOS"),
    ("idefics3", "Where does <|begin_of_text|> go?", "<|begin_of_text|>", "BOS"),
]


@pytest.mark.parametrize(("family", "prompt", "token", "role"), SPECIAL)
def test_a_bos_or_eos_in_a_question_is_refused_saying_why(processors, family, prompt, token,
                                                          role):  # fmt: skip
    processor = processors[family]
    tok = processor.tokenizer
    # what the message claims: the tokenizer reads the text as its one special token
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids(token) in ids
    with pytest.raises(RowError) as err:
        ChatFormat(processor).check_prompt(prompt)
    assert err.value.reason == "special_token_in_prompt"
    assert f"the tokenizer would read {token} as its {role} token" in err.value.detail
    assert "already in the chat template's format" not in err.value.detail


def test_a_templated_prompt_behind_a_bos_names_its_framing(processors):
    """'<s>USER: ...': the user-turn text after the BOS is the template's too."""
    with pytest.raises(RowError) as err:
        ChatFormat(processors["llava"]).check_prompt("<s>USER: <image>\nWhat is shown?")
    assert err.value.reason == "pretemplated_prompt"
    assert "user-turn text 'USER:'" in err.value.detail
    assert "special token(s) <s>" in err.value.detail


def test_screen_prompts_counts_the_refused_rows(processors):
    prompts = ["What is shown?", TEMPLATED, "What does <s> do?", "<image> Which colour?"]
    screen = screen_prompts(processors["toy"], prompts)
    assert screen.kept == [0, 3] and screen.refused == 2
    assert screen.report.skipped == {"pretemplated_prompt": 1, "special_token_in_prompt": 1}
    record = screen.record()
    assert record["rows"] == {"pretemplated_prompt": [1], "special_token_in_prompt": [2]}
    assert "BOS token" in record["details"]["special_token_in_prompt"]
    assert "special_token_in_prompt: 1 (rows 2)" in str(screen)


# ------------------------------------------------------------------------------ mmalign chat


@pytest.mark.parametrize(
    ("prompt", "said"),
    [(TEMPLATED, "--prompt: the prompt is already in the chat template's format"),
     ("What does <s> do?", "--prompt: the prompt holds the tokenizer's special token(s) <s>")],
)  # fmt: skip
def test_chat_refuses_such_a_prompt_before_the_model_loads(monkeypatch, capsys, prompt, said):
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    assert main(["chat", "toy:vlm", "--prompt", prompt]) == 2
    assert said in capsys.readouterr().err
    assert calls == []
    with pytest.raises(Stop):  # a raw prompt goes on to load the model
        main(["chat", "toy:vlm", "--prompt", "What color is the shape?"])
    assert len(calls) == 1


# -------------------------------------------------------------------------- mmalign eval vlm


def test_eval_vlm_leaves_such_rows_out_counted(tmp_path, monkeypatch, capsys):
    import mmalign.vlm.evaluate as evaluate

    build = evaluate.heldout_build

    def with_templated(task: str, n: int, seed: int):
        rows, dropped = build(task, n, seed)
        rows = [dict(rows[i]) for i in range(len(rows))]
        rows[1]["prompt"] = f"USER: <image>\n{rows[1]['prompt']} ASSISTANT:"
        rows[2]["prompt"] = "What does <s> do?"
        return rows, dropped

    monkeypatch.setattr(evaluate, "heldout_build", with_templated)
    out = tmp_path / "r.json"
    assert main(["eval", "vlm", "toy:vlm", "--task", "safety", "--n", "6", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    results = json.loads(out.read_text())
    assert results["dropped"] == {"pretemplated_prompt": 1, "special_token_in_prompt": 1}
    assert results["asked"] == 6 and results["n"] == 4
    assert results["refusal_rate_n"] + results["benign_accuracy_n"] == 4
    assert "2 of 6 items drawn dropped" in captured.out
    assert "already in the chat template's format" in captured.err  # and why
