"""Batched generation for PRISM (Li et al. 2025, section 3.2): one stage at a time for the
search, whole answers for evaluation.

A stage request is a row (prompt + image), the assistant text so far (the prefix: whole stages)
and the stage to write. Its opening tag is prefilled after the prefix and generation stops at
the stage's closing tag (one token, `mmalign.vlm.prism.format`) or at the end of the turn; a
sample that reaches `max_new_tokens` without the closing tag comes back `closed=False` (the
search scores it as a failed node). Requests of many trees and nodes share one `generate` call
per `batch_size` sequences, with left padding, whatever stage each writes: each row stops at its
own stage's closing tag, so stages at different depths do not split the batch. On LLaVA-family
models an expansion's samples continue one shared encoding of their prompt and finished rows
leave the batch (`decode.sample_shared`); other models take `generate` with `_RowStop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..chat_format import ChatFormat
from ..collate import row_images, special_tokens_kwargs, user_content
from .decode import plain_sampling, sample_shared, shares_prefix
from .format import close_tag, decode_keep_tags, open_tag, special_ids_to_drop, tag_ids


@dataclass(frozen=True)
class StageRequest:
    prompt: str
    images: tuple[Any, ...]
    prefix: str  # whole stages written so far
    stage: str  # the stage to write


@dataclass(frozen=True)
class StageSample:
    text: str  # the stage with its tags ("<|CAPTION|>...<|/CAPTION|>"), or what was written
    closed: bool  # False: the limit (or the end of the turn) came before the closing tag
    tokens: int


def prompt_text(processor: Any, prompt: str, n_images: int) -> str:
    """The chat template's prompt for one user turn, ready for the assistant's text."""
    user = [{"role": "user", "content": user_content(prompt, n_images)}]
    return processor.apply_chat_template(user, add_generation_prompt=True)


def answer_lead(processor: Any) -> str:
    """The text the chat template puts between the generation prompt and an assistant answer
    (" " for LLaVA-1.5's "ASSISTANT: answer", "" for Qwen2-VL): a stage prefilled after the
    prompt must start with it, as the training sequences do, or the first stage is sampled
    from a context the model never saw."""
    user = [{"role": "user", "content": user_content("q", 0)}]
    head = processor.apply_chat_template(user, add_generation_prompt=True)
    probe = "XYZPROBE"
    turn = {"role": "assistant", "content": [{"type": "text", "text": probe}]}
    full = processor.apply_chat_template([*user, turn])
    if not full.startswith(head) or probe not in full[len(head) :]:
        return ""
    return full[len(head) : full.index(probe, len(head))]


def _inputs(processor: Any, texts: list[str], images: list[tuple[Any, ...]], device: Any):
    from ...data.schema import to_pil_image, to_rgb

    kwargs: dict[str, Any] = {
        "text": texts,
        "padding": True,
        "return_tensors": "pt",
        **special_tokens_kwargs(processor, texts),
    }
    shown = [[to_rgb(to_pil_image(im)) for im in ims] for ims in images]
    if any(shown):
        # as the collator lays them out (vlm/blind.py): one list per prompt where one shows
        # several (LLaVA-OneVision tiles an image alone, not one among others), else flat
        several = any(len(ims) > 1 for ims in shown)
        kwargs["images"] = shown if several else [im for ims in shown for im in ims]
    return processor(**kwargs).to(device)


class _RowStop:
    """A `StoppingCriteria` that ends row b when its last token is `stops[b]` (a row's own
    closing tag; the end of the turn stops every row through `eos_token_id`)."""

    def __init__(self, stops: torch.Tensor) -> None:
        self.stops = stops

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return input_ids[:, -1] == self.stops


@torch.no_grad()
def _generate(model: Any, processor: Any, texts: list[str], images: list[tuple[Any, ...]],
              eos: list[int], *, samples: int, max_new_tokens: int, sample: bool,
              temperature: float, stops: list[int] | None = None,
              ) -> list[list[torch.Tensor]]:  # fmt: skip
    """New token ids per text (`samples` each), padding stripped. `eos` ends every row;
    `stops` (one token per text) ends that text's rows too."""
    from transformers import StoppingCriteriaList

    tok = getattr(processor, "tokenizer", processor)
    side, tok.padding_side = tok.padding_side, "left"
    try:
        inputs = _inputs(processor, texts, images, model.device)
    finally:
        tok.padding_side = side
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[-1]
    extra: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_k": 0,
                             "top_p": 1.0} if sample else {"do_sample": False}  # fmt: skip
    if samples > 1 and shares_prefix(model) and plain_sampling(model):
        new = sample_shared(model, inputs, samples, max_new_tokens=max_new_tokens, eos=eos,
                            pad=pad, stops=None if stops is None else torch.tensor(stops),
                            sample=sample, temperature=temperature).cpu()  # fmt: skip
    else:
        if stops is not None:  # rows are text-major after num_return_sequences
            per_row = torch.tensor(stops, device=inputs["input_ids"].device)
            extra["stopping_criteria"] = StoppingCriteriaList(
                [_RowStop(per_row.repeat_interleave(samples))]
            )
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, eos_token_id=eos,
                             pad_token_id=pad, num_return_sequences=samples, **extra)  # fmt: skip
        new = out[:, inputs["input_ids"].shape[1] :].cpu()
    result: list[list[torch.Tensor]] = []
    for i in range(len(texts)):
        ends = {*eos, *([stops[i]] if stops is not None else [])}
        rows = []
        for j in range(samples):
            ids = new[i * samples + j]
            stop = [k for k, t in enumerate(ids.tolist()) if t in ends]
            rows.append(ids[: stop[0] + 1] if stop else ids)
        result.append(rows)
    return result


class StageGenerator:
    """Samples of single stages (temperature sampling), `batch_size` sequences per call."""

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int = 48,
                 temperature: float = 1.0, batch_size: int = 96):  # fmt: skip
        if max_new_tokens < 1 or batch_size < 1 or temperature <= 0:
            raise ValueError("max_new_tokens and batch_size must be >= 1, temperature > 0")
        self.model, self.processor = model, processor
        self.max_new_tokens, self.temperature, self.batch_size = \
            max_new_tokens, temperature, batch_size  # fmt: skip
        self.ids = tag_ids(processor)
        self.drop = special_ids_to_drop(processor)  # once: decoding runs per sample
        tok = getattr(processor, "tokenizer", processor)
        self.eos = tok.eos_token_id
        self.calls = 0  # generate() calls made
        self.lead = answer_lead(processor)
        self._chat = ChatFormat(processor)
        self._checked: set[str] = set()  # the prompts `check_prompt` took, checked once

    def _sample(self, stage: str, close: int, ids: torch.Tensor) -> StageSample:
        text = open_tag(stage) + decode_keep_tags(self.processor, ids, self.drop)
        return StageSample(text, bool(len(ids)) and int(ids[-1]) == close, len(ids))

    def __call__(self, requests: Sequence[StageRequest], samples: int) -> list[list[StageSample]]:
        """`samples` samples of each request's stage, in request order."""
        for r in requests:  # (`prism-mcts` leaves such rows out first, counted)
            if r.prompt not in self._checked:
                self._chat.check_prompt(r.prompt)  # RowError: it would be templated twice
                self._checked.add(r.prompt)
        per_call = max(1, self.batch_size // samples)
        out: list[list[StageSample]] = []
        for start in range(0, len(requests), per_call):
            chunk = requests[start : start + per_call]
            texts = [prompt_text(self.processor, r.prompt, len(r.images)) + self.lead
                     + r.prefix + open_tag(r.stage) for r in chunk]  # fmt: skip
            # each row's own closing tag ends its samples (and the end of the turn always)
            closes = [self.ids[close_tag(r.stage)] for r in chunk]
            ids = _generate(self.model, self.processor, texts, [r.images for r in chunk],
                            [self.eos], samples=samples, max_new_tokens=self.max_new_tokens,
                            sample=True, temperature=self.temperature, stops=closes)  # fmt: skip
            self.calls += 1
            for r, close, rows in zip(chunk, closes, ids, strict=True):
                out.append([self._sample(r.stage, close, x) for x in rows])
        return out


def generate_full(model: Any, processor: Any, rows: Sequence[dict[str, Any]], *,
                  batch_size: int = 64, max_new_tokens: int = 128,
                  desc: str = "answering") -> list[str]:  # fmt: skip
    """Greedy whole answers to `rows` (prompt + image), stage tags kept when the tokenizer has
    them (a model without the format answers plainly). A prompt already in the chat template's
    format raises `RowError` (`evaluate_prism` leaves such rows out first, counted)."""
    chat = ChatFormat(processor)
    for row in rows:
        chat.check_prompt(row["prompt"])
    tok = getattr(processor, "tokenizer", processor)
    eos = [tok.eos_token_id]
    drop = special_ids_to_drop(processor)
    answers: list[str] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        chunk = rows[start : start + batch_size]
        images = [tuple(row_images(r)) for r in chunk]
        texts = [prompt_text(processor, r["prompt"], len(ims)) for r, ims in
                 zip(chunk, images, strict=True)]  # fmt: skip
        ids = _generate(model, processor, texts, images, eos, samples=1,
                        max_new_tokens=max_new_tokens, sample=False, temperature=1.0)  # fmt: skip
        answers += [decode_keep_tags(processor, r[0], drop).strip() for r in ids]
    return answers
