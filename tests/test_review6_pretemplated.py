"""A prompt already in the chat template's format is refused, not templated twice (review 6).

TRL's DPOTrainer uses a "standard" (string) prompt as it is, so TRL data often holds prompts
already rendered by the model's template. mmalign applies the template itself: LLaVA's
"USER: <image>\\nWhat is shown? ASSISTANT:" became 'USER: USER:<image>\\nWhat is shown?
ASSISTANT: ASSISTANT:', silently. Such a prompt now raises `RowError` "pretemplated_prompt"
(and `PairCollator.problem` / `skip_reason` tell it); a prompt that only mentions "assistant"
or holds a colon passes.
"""

from __future__ import annotations

import pytest
from test_review6_vlm_collate import family_processors
from vlm_helpers import random_images

from mmalign.data.schema import SKIP_NOTES
from mmalign.vlm.collate import ChatFormat, PairCollator, RowError
from mmalign.vlm.tiny import tiny_qwen2vl


@pytest.fixture(scope="module")
def processors():
    return family_processors()


def _row(prompt: str) -> dict:
    (image,) = random_images(1, size=32)
    return {"prompt": prompt, "image": image, "chosen": "A cat.", "rejected": "A dog."}


PRETEMPLATED = [
    # LLaVA-1.5's own format, as TRL standard-format LLaVA data holds it
    ("llava", "USER: <image>\nWhat is shown? ASSISTANT:", "'ASSISTANT:'"),
    ("llava", "<image>\nWhat is shown? ASSISTANT:", "generation prompt 'ASSISTANT:'"),
    ("llava", "USER: <image>\nWhat is shown?", "user-turn text 'USER:'"),
    ("llava", "<s>USER: <image>\nWhat is shown? ASSISTANT:", "special token(s) <s>"),
    ("llava_next", "USER: <image>\nWhat is shown? ASSISTANT:", "'ASSISTANT:'"),
    ("toy", "USER: <image>\nwhat color is the shape? ASSISTANT:", "'ASSISTANT:'"),
    # Qwen2-VL's, with its image tokens, or with <image> and the role tokens
    ("qwen", "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is shown?"
     "<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>"),
    ("qwen", "<|im_start|>user\n<image>What is shown?<|im_end|>\n<|im_start|>assistant\n",
     "generation prompt '<|im_end|>\\n<|im_start|>assistant'"),
    ("qwen", "<|vision_start|><|image_pad|><|vision_end|>What is shown?", "<|image_pad|>"),
    ("idefics3", "<|begin_of_text|>User:<image>What is shown?<end_of_utterance>\nAssistant:",
     "<end_of_utterance>"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "prompt", "found"), PRETEMPLATED)
def test_a_pretemplated_prompt_is_refused(processors, family, prompt, found):
    collator = PairCollator(processors[family], ("main",), max_length=4096)
    row = _row(prompt)
    problem = collator.problem(row)
    assert isinstance(problem, RowError) and problem.reason == "pretemplated_prompt"
    assert found in problem.detail and "raw user text" in problem.detail
    assert collator.skip_reason(row) == "pretemplated_prompt"  # told before any tokenization
    with pytest.raises(RowError, match=r"^row 7: the prompt is already in the chat template") \
            as err:  # fmt: skip
        collator([row], row_ids=[7])
    assert err.value.reason == "pretemplated_prompt"
    with pytest.raises(RowError, match="already in the chat template's format"):
        ChatFormat(processors[family]).render(prompt, 1, ["A cat."])


def test_the_template_is_applied_once_where_it_was_applied_twice(processors):
    """The review's case: LLaVA's prompt came out 'USER: USER:<image>... ASSISTANT: ASSISTANT:'."""
    with pytest.raises(RowError) as err:
        ChatFormat(processors["llava"]).render("USER: <image>\nWhat is shown? ASSISTANT:", 1,
                                               ["A cat."])  # fmt: skip
    assert err.value.reason == "pretemplated_prompt"
    assert "pretemplated_prompt" in SKIP_NOTES


PLAIN = [
    "<image>\nWhat is shown?",
    "What is shown?",
    "You are the assistant: describe the image.",
    "Reply as a helpful assistant: what colour is the shape?",
    "The user asked the assistant: is it red? Answer: yes or no",
    "<image> Time is 10:30; what does the clock show? assistant: short answer",
    "An interface screenshot. Which button is the USER: field? (User: the login box)",
    "Ratio 3:2 ASSISTANT: notes are in the image <image>",
    "Compare <image> and the text 'a < b > c' (plain angle brackets): which is bigger?",
]


@pytest.mark.parametrize("family", ["toy", "llava", "llava_next", "qwen", "idefics3"])
def test_plain_prompts_pass(processors, family):
    """Words such as "assistant:" or "USER:" inside the text, colons, angle brackets: used."""
    processor = processors[family]
    collator = PairCollator(processor, ("main",))
    for prompt in PLAIN:
        row = _row(prompt)
        assert collator.problem(row) is None, (family, prompt)
        assert collator.skip_reason(row) is None, (family, prompt)
        templated = ChatFormat(processor).render(prompt, 1, ["A cat."])
        text = prompt.replace("<image>", "").split()[-1]
        assert templated.prompt.count(text) == prompt.count(text), (family, prompt)
    assert collator([_row(p) for p in PLAIN]).input_ids.shape[0] == 2 * len(PLAIN)


@pytest.mark.parametrize("kind", ["vqa", "hallucination", "safety", "prism"])
def test_the_toy_vlm_data_passes(processors, kind):
    from datasets import load_from_disk

    from mmalign.toy.cache import toy_pairs

    rows = load_from_disk(str(toy_pairs(kind, {"n": 12})))
    collator = PairCollator(processors["toy"], ("main",))
    assert len(rows) > 0
    assert [collator.problem(rows[i]) for i in range(len(rows))] == [None] * len(rows)


def test_special_tokens_the_template_never_writes_pass():
    """Qwen2-VL's grounding tokens (`<|box_start|>`) are special tokens a user's question may
    hold; the template never writes them, so they are no sign of a templated prompt."""
    processor = tiny_qwen2vl()[1]
    boxes = ["<|box_start|>", "<|box_end|>"]
    tok = processor.tokenizer
    tok.add_special_tokens({"additional_special_tokens": [*tok.all_special_tokens, *boxes]})
    assert set(boxes) <= set(tok.all_special_tokens)
    chat = ChatFormat(processor)
    chat.check_prompt("<image> What is in <|box_start|>(10,20),(30,40)<|box_end|>?")
    with pytest.raises(RowError, match=r"special token\(s\) <\|im_start\|>"):
        chat.check_prompt("<|im_start|>user\nWhat is in <|box_start|>(10,20),(30,40)<|box_end|>?")
