"""LLaVA-NeXT's `image_newline` trains with the projector, not with the vision tower.

`image_newline` is a learned vector of `LlavaNextModel` that the projector side appends after
each row of projected image features: it lives in the language model's embedding space, as the
projector's output does. A full fine-tune decided it by `vlm.train_vision` (it is not named
*projector*), so the default recipe (vision tower frozen, projector trained) froze it, and
`train_projector: false` with `train_vision: true` trained it.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.vlm.parts import full_finetune_trains


def _tiny_llava_next() -> torch.nn.Module:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=63,
        image_grid_pinpoints=[[32, 32]],
    )  # fmt: skip
    torch.manual_seed(0)
    return LlavaNextForConditionalGeneration(config)


@pytest.mark.parametrize("train_vision", [False, True])
@pytest.mark.parametrize("train_projector", [False, True])
def test_image_newline_follows_train_projector(train_vision, train_projector):
    model = _tiny_llava_next()
    names = [n for n, _ in model.named_parameters()]
    newline = [n for n in names if n.split(".")[-1] == "image_newline"]
    assert newline, "the tiny LLaVA-NeXT has no image_newline parameter"
    settings = {"train_vision": train_vision, "train_projector": train_projector}
    trains = {n: full_finetune_trains(n, **settings) for n in names}
    for name in newline:
        assert trains[name] is train_projector, name
    projector = [n for n in names if "multi_modal_projector" in n]
    vision = [n for n in names if "vision_tower" in n]
    language = [n for n in names if n not in {*newline, *projector, *vision}]
    assert projector and vision and language
    assert all(trains[n] is train_projector for n in projector)
    assert all(trains[n] is train_vision for n in vision)
    assert all(trains[n] for n in language)
