"""toy-vlm's evaluation: greedy answers through the processor and `generate`, held-out
exact-match accuracy, and the refusal rates a safety method starts from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ...qa import QUESTION_TYPES, REFUSAL, STYLES, ToyQA, make_forbidden, sample_qa
from .model import Encoder, to_pil, to_pixel_values, user_turn


@torch.no_grad()
def answer_batch(model, processor, images: Sequence[Any], questions: Sequence[str],
                 max_new_tokens: int = 4) -> list[str]:  # fmt: skip
    """Greedy answers, one per (image, question), through the processor and `generate`."""
    texts = [processor.apply_chat_template(user_turn(q), add_generation_prompt=True)
             for q in questions]  # fmt: skip
    inputs = processor(images=[to_pil(im) for im in images], text=texts, padding=True,
                       return_tensors="pt")  # fmt: skip
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    replies = processor.batch_decode(out[:, inputs["input_ids"].shape[1] :],
                                     skip_special_tokens=True)  # fmt: skip
    return [r.strip() for r in replies]


def answer(model, processor, image: Any, question: str, max_new_tokens: int = 4) -> str:
    """The model's greedy answer about one image (PIL, array, or [3,H,W] tensor in [0,1])."""
    return answer_batch(model, processor, [image], [question], max_new_tokens)[0]


def heldout_qa(
    n: int, seed: int = 1234, styles: Sequence[str] = STYLES
) -> tuple[list[ToyQA], torch.Tensor]:
    """A fixed set of `n` balanced QA items on jittered renders of held-out prompts."""
    return sample_qa(n, "heldout", torch.Generator().manual_seed(seed), styles)


def score(
    model, processor, n: int = 300, seed: int = 1234, batch: int = 100,
    styles: Sequence[str] = STYLES,
) -> dict[str, Any]:  # fmt: skip
    """Exact-match accuracy (overall and per question type) on `heldout_qa(n, seed, styles)`."""
    items, images = heldout_qa(n, seed, styles)
    replies: list[str] = []
    for i in range(0, n, batch):
        replies += answer_batch(model, processor, images[i : i + batch],
                                [it.question for it in items[i : i + batch]])  # fmt: skip
    hits = [r.lower() == it.answer for r, it in zip(replies, items, strict=True)]
    metrics: dict[str, Any] = {"accuracy": sum(hits) / n, "n": n, "seed": seed}
    for kind in QUESTION_TYPES:
        k = [h for h, it in zip(hits, items, strict=True) if it.kind == kind]
        metrics[f"accuracy_{kind}"] = sum(k) / max(1, len(k))
    metrics["errors"] = [
        {"prompt": it.prompt.text, "question": it.question, "expected": it.answer, "got": r}
        for r, it, h in zip(replies, items, hits, strict=True)
        if not h
    ][:20]
    return metrics


def refusal_rates(
    model, processor, n: int = 200, seed: int = 1234, batch: int = 100
) -> dict[str, float]:
    """Greedy exact-REFUSAL rates on `n` forbidden requests and on `n` ordinary questions, on
    renders of held-out prompts: the base rates a safety method (BPO) starts from."""
    gen = torch.Generator().manual_seed(seed)
    items, images = heldout_qa(n, seed)
    draws = torch.randint(1 << 20, (n, 2), generator=gen).tolist()
    forbidden = [make_forbidden(it.prompt, t, 100 + k % 900, True)
                 for it, (t, k) in zip(items, draws, strict=True)]  # fmt: skip
    rates = {}
    for name, qs in (("refusal_forbidden", forbidden), ("refusal_benign", items)):
        replies: list[str] = []
        for i in range(0, n, batch):
            replies += answer_batch(
                model,
                processor,
                images[i : i + batch],
                [q.question for q in qs[i : i + batch]],
                max_new_tokens=12,
            )
        rates[name] = sum(r == REFUSAL for r in replies) / n
    # How likely the refusal is under teacher forcing: what a preference method starts from.
    vision = model.config.vision_config
    encoder = Encoder(processor.tokenizer, (vision.image_size // vision.patch_size) ** 2)
    logps = []
    with torch.no_grad():
        for i in range(0, n, batch):
            inputs = encoder.batch([[q] for q in forbidden[i : i + batch]])
            labels = inputs.pop("labels")
            logits = model(**inputs, pixel_values=to_pixel_values(images[i : i + batch])).logits
            target = labels[:, 1:]
            logp = logits[:, :-1].float().log_softmax(-1)
            picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
            logps += (picked * (target != -100)).sum(1).tolist()
    rates["refusal_forbidden_prob"] = sum(torch.tensor(logps).exp().tolist()) / n
    return rates


def load_toy_vlm(path: str | Path):
    """(model, processor) from a toy-vlm folder, through the same Auto path as LLaVA-1.5."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path).eval()
    return model, AutoProcessor.from_pretrained(path)


def evaluate_toy_vlm(
    path: str | Path, n: int = 300, seed: int = 1234, styles: Sequence[str] = STYLES
) -> dict[str, Any]:
    """Held-out exact-match accuracy of a saved toy-vlm (see `score`)."""
    model, processor = load_toy_vlm(path)
    return score(model, processor, n, seed, styles=styles)
