"""A completion ends its turn with the tokenizer's EOS where the chat template appends none.

LLaVA-1.5's hub template (llava-hf/llava-1.5-7b-hf, chat_template.json) renders an assistant
turn as `text + ' '`: no `</s>`, although LLaVA's own training format (vicuna_v1) ends every
assistant turn with it. Scored as rendered, DPO and SFT never train the stop token and score a
stray space token instead. Templates that end the turn with a special token keep their own.
"""

from __future__ import annotations

import pytest

from mmalign.vlm.collate import ChatFormat, PairCollator
from mmalign.vlm.tiny import tiny_llava

# llava-hf/llava-1.5-7b-hf's template, as released (the text parts of each turn, then a space)
HUB_LLAVA = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def llava():
    model, processor = tiny_llava()
    return model, processor


def test_a_template_without_an_end_gets_the_eos(llava):
    _, processor = llava
    processor.chat_template = HUB_LLAVA
    done = ChatFormat(processor).render("What colour is it?", 1, ["red", "a blue square"])
    assert done.completions == {"red": " red</s>", "a blue square": " a blue square</s>"}
    batch = PairCollator(processor, ("main",))(
        [{"prompt": "What colour is it?", "chosen": "red", "rejected": "blue",
          "image": _image()}]
    )  # fmt: skip
    eos = processor.tokenizer.eos_token_id
    for row, mask in zip(batch.input_ids, batch.completion_mask, strict=True):
        scored = row[mask].tolist()
        assert scored[-1] == eos  # the stop token is scored, no space token after the answer


def test_a_template_that_ends_its_turn_is_kept(llava):
    _, processor = llava
    from mmalign.vlm.tiny import LLAVA_TEMPLATE, QWEN_TEMPLATE

    processor.chat_template = LLAVA_TEMPLATE  # the tiny one: `{{ eos_token }}` after the answer
    assert ChatFormat(processor).render("Q?", 1, ["red"]).completions == {"red": " red</s>"}
    processor.chat_template = QWEN_TEMPLATE  # ends with <|im_end|>, a special token here too
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    done = ChatFormat(processor).render("Q?", 1, ["red"]).completions["red"]
    assert done.endswith("red<|im_end|>\n")


def test_open_ended_answers_stay_open(llava):
    _, processor = llava
    processor.chat_template = HUB_LLAVA
    chat = ChatFormat(processor, open_end=lambda a: a.endswith("..."))
    assert chat.render("Q?", 1, ["a step..."]).completions == {"a step...": " a step..."}


def _image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (200, 30, 30))
