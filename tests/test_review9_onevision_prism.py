"""PRISM's stage generation lays out a prompt's images as training scores them: on
LLaVA-OneVision an image among others is its base tile, so a prompt of two large images gets
two base tiles of image tokens (before, its images went to the processor as one flat list and
each was tiled as if shown alone)."""

from __future__ import annotations

from test_review9_onevision import BASE_TOKENS, _image, onevision, vlm  # noqa: F401

from mmalign.vlm.chat_format import user_content
from mmalign.vlm.prism.generate import _inputs


def test_a_prompt_of_two_images_gets_two_base_tiles(vlm) -> None:  # noqa: F811
    user = [{"role": "user", "content": user_content("Which is red?", 2)}]
    text = vlm.processor.apply_chat_template(user, add_generation_prompt=True)
    large = (_image((40, 40), 1), _image((40, 40), 2))  # each tiled 2x2 when shown alone
    ids = _inputs(vlm.processor, [text], [large], "cpu")["input_ids"]
    assert int((ids == vlm.model.config.image_token_id).sum()) == 2 * BASE_TOKENS
    # one image alone is still tiled (more than a base tile), as the collator lays it out
    one = [{"role": "user", "content": user_content("Is it red?", 1)}]
    text = vlm.processor.apply_chat_template(one, add_generation_prompt=True)
    ids = _inputs(vlm.processor, [text], [large[:1]], "cpu")["input_ids"]
    assert int((ids == vlm.model.config.image_token_id).sum()) > BASE_TOKENS
