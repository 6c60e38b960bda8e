"""toy-vlm's model: the LLaVA-1.5 classes at toy sizes (`ToyVLMArch`), its processor, and the
batches it reads: pixel values from renders, token ids and answer labels from conversations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...qa import IMAGE_SIZE, ToyQA
from .tokenizer import CHAT_TEMPLATE, IMAGE_TOKEN

# OpenAI CLIP's normalisation, which LLaVA-1.5's processor uses too.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ToyVLMArch:
    """Sizes of the two towers; the defaults are the shipped model's."""

    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    # Vision layers the projector reads, concatenated: 0 (the patch embeddings) carries each
    # patch's colours; -1 carries what the tower learned (shape).
    feature_layers: tuple[int, ...] = (0, -1)
    # Tied input/output embeddings put the colour words a question says and the colour the model
    # would answer in one space, which is what "Is there a red circle?" must compare.
    tie_embeddings: bool = True
    vocab_size: int = 512  # the BPE's target; the model uses the tokenizer's real length

    @property
    def image_tokens(self) -> int:
        return (IMAGE_SIZE // self.patch_size) ** 2


def make_processor(tokenizer, arch: ToyVLMArch):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    # CLIP prepends a CLS token (+1) and "default" drops it again: patches^2 image tokens.
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=arch.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def make_model(tokenizer, arch: ToyVLMArch, seed: int = 0):
    """A randomly initialised LlavaForConditionalGeneration with the toy-vlm architecture."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=arch.patch_size,
        hidden_size=arch.vision_hidden,
        intermediate_size=4 * arch.vision_hidden,
        num_hidden_layers=arch.vision_layers,
        num_attention_heads=arch.vision_heads,
        projection_dim=arch.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.text_hidden,
        intermediate_size=4 * arch.text_hidden,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        num_key_value_heads=arch.text_heads,
        max_position_embeddings=256,
        tie_word_embeddings=arch.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=arch.image_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        tie_word_embeddings=arch.tie_embeddings,
        vision_feature_layer=(
            arch.feature_layers[0] if len(arch.feature_layers) == 1 else list(arch.feature_layers)
        ),
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    gen.pad_token_id, gen.max_new_tokens, gen.do_sample = tokenizer.pad_token_id, 8, False
    return model


# ---------------------------------------------------------------------------------------------
# Batches


def to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Renders [B,3,32,32] in [0,1] -> CLIP-normalised pixel values, as the processor computes
    them from the same image as uint8 (renders are exact multiples of 1/255), without its
    per-image PIL round trip, which would dominate a step of this tiny model."""
    images = (images * 255).round() / 255
    mean = torch.tensor(CLIP_MEAN)[None, :, None, None]
    std = torch.tensor(CLIP_STD)[None, :, None, None]
    return (images - mean) / std


def to_pil(image: Any):
    """A [3,H,W] float tensor in [0,1] -> PIL image; anything else is passed through."""
    if not torch.is_tensor(image):
        return image
    from PIL import Image

    array = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy())


def user_turn(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


class Encoder:
    """Token ids and answer labels for conversations, as the processor would tokenise them.

    A conversation is tokenised as BOS + the segments `USER: [<image>\\n]{q} ASSISTANT:` and
    ` {a}</s>`: every boundary is a pre-tokenizer split (a space-prefixed word, or a special
    token), so the concatenation equals tokenising the chat-template text, which the tests
    check. The few hundred distinct segments are tokenised once."""

    def __init__(self, tokenizer, image_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.image_tokens = image_tokens
        self.cache: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            expanded = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * self.image_tokens)
            self.cache[text] = self.tokenizer(expanded, add_special_tokens=False).input_ids
        return self.cache[text]

    def encode(self, conversation: Sequence[ToyQA]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one conversation; the image goes with the first question."""
        ids, labels = [self.tokenizer.bos_token_id], [-100]
        for turn, qa in enumerate(conversation):
            image = f"{IMAGE_TOKEN}\n" if turn == 0 else ""
            prompt = self.ids(f"USER: {image}{qa.question} ASSISTANT:")
            reply = self.ids(f" {qa.answer}{self.tokenizer.eos_token}")
            ids += prompt + reply
            labels += [-100] * len(prompt) + reply
        return ids, labels

    def batch(self, conversations: Sequence[Sequence[ToyQA]]) -> dict[str, torch.Tensor]:
        """Right-padded input_ids / attention_mask / labels (-100 except answers and EOS)."""
        encoded = [self.encode(c) for c in conversations]
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(ids)] = torch.tensor(lab)
            mask[row, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
