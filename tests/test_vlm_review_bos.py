"""A chat template that writes the BOS itself (Idefics3's starts with `<|begin_of_text|>`) must
not get a second one from the tokenizer: the collator's sequences and the generation prompts
hold one BOS, as transformers' `processor.apply_chat_template(tokenize=True)` does."""

from __future__ import annotations

import torch
from vlm_helpers import random_images

from mmalign.vlm.blind import generate_answers
from mmalign.vlm.collate import PairCollator, user_content
from mmalign.vlm.tiny import LLAVA_TEMPLATE, tiny_llava


def _llava(bos_in_template: bool):
    model, processor = tiny_llava()
    if bos_in_template:
        processor.chat_template = "{{ bos_token }}" + LLAVA_TEMPLATE
    return model, processor


def _reference_prompt_ids(processor, prompt: str, image) -> list[int]:
    user = [{"role": "user", "content": user_content(prompt, 1)}]
    out = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=True,
                                        return_dict=True, images=[image])  # fmt: skip
    return list(out["input_ids"][0])


def test_collated_prompt_has_one_bos_when_the_template_writes_it():
    (image,) = random_images(1)
    row = {"prompt": "what color is the shape?", "image": image, "chosen": "red",
           "rejected": "blue"}  # fmt: skip
    for bos_in_template in (True, False):
        _, processor = _llava(bos_in_template)
        bos = processor.tokenizer.bos_token_id
        batch = PairCollator(processor, ("main",))([row])
        ids = batch.input_ids[0][batch.attention_mask[0].bool()]
        prompt = ids[~batch.completion_mask[0][: len(ids)]].tolist()
        assert prompt[:2].count(bos) == 1, bos_in_template
        assert prompt == _reference_prompt_ids(processor, row["prompt"], image)


class _Spy:
    """The processor, recording the input ids it returns."""

    def __init__(self, processor):
        self.inner, self.ids = processor, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.ids.append(out["input_ids"])
        return out


def test_generation_prompt_has_one_bos_when_the_template_writes_it():
    model, processor = _llava(True)
    (image,) = random_images(1)
    spy = _Spy(processor)
    conversation = [{"role": "user", "content": user_content("what color?", 1)}]
    with torch.no_grad():
        generate_answers(model, spy, [conversation], [[image]], max_new_tokens=2)
    (ids,) = spy.ids
    bos = processor.tokenizer.bos_token_id
    assert ids[0, 0] == bos and ids[0, 1] != bos
