"""BPO blind responses (MMSafe-PO): the reference model answers each instruction with the
image removed. The answer it gives blind is a likely hallucination; BPO trains the chosen
answer above it under the full (image + text) input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..devices import CPU_FLOAT32, precision_of
from .collate import IMAGE_PLACEHOLDER, special_tokens_kwargs


def text_only(prompt: str) -> list[dict[str, Any]]:
    text = " ".join(part.strip() for part in prompt.split(IMAGE_PLACEHOLDER) if part.strip())
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


@torch.no_grad()
def generate_answers(model: Any, processor: Any, conversations: Sequence[list[dict]],
                     images: Sequence[list[Any]] | None = None, *, batch_size: int = 32,
                     max_new_tokens: int = 32, desc: str = "answers") -> list[str]:  # fmt: skip
    """Greedy answers, batched with left padding (generation appends on the right)."""
    tok = getattr(processor, "tokenizer", processor)
    side, tok.padding_side = tok.padding_side, "left"
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(conversations), batch_size), desc=desc, unit="batch"):
            chunk = conversations[start : start + batch_size]
            texts = [processor.apply_chat_template(c, add_generation_prompt=True) for c in chunk]
            kwargs: dict[str, Any] = {
                "text": texts,
                "padding": True,
                "return_tensors": "pt",
                **special_tokens_kwargs(processor, texts),
            }
            if images is not None and any(images[start : start + batch_size]):
                kwargs["images"] = [im for ims in images[start : start + batch_size] for im in ims]
            inputs = processor(**kwargs).to(model.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]
            answers += [a.strip() for a in processor.batch_decode(new, skip_special_tokens=True)]
    finally:
        tok.padding_side = side
    return answers


def blind_responses(model: Any, processor: Any, prompts: Sequence[str], *,
                    batch_size: int = 32, max_new_tokens: int = 32) -> list[str]:  # fmt: skip
    """The model's answer to each prompt without its image(s)."""
    return generate_answers(
        model, processor, [text_only(p) for p in prompts], batch_size=batch_size,
        max_new_tokens=max_new_tokens, desc="blind responses",
    )  # fmt: skip


def cache_precision(model: Any, device: torch.device | str) -> list[dict[str, str]]:
    """What a cache key of `model`'s greedy answers adds for where they are generated: the
    device type and dtype once `model` is on `device` (greedy answers can differ on a GPU or
    in bfloat16), or nothing for the CPU in float32, the only way they were generated before
    the key named it (`devices.CPU_FLOAT32`): a CPU float32 run keeps finding its entries,
    and no other run reads them."""
    here = {"device": torch.device(device).type, "dtype": precision_of(model)["dtype"]}
    return [] if here == CPU_FLOAT32 else [here]
