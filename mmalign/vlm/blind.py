"""BPO blind responses (MMSafe-PO): the reference model answers each instruction with the
image removed. The answer it gives blind is a likely hallucination; BPO trains the chosen
answer above it under the full (image + text) input.

An answer cut by `max_new_tokens` before the model ended it is marked `capped`: the recipe
counts those and scores them as unfinished turns, without the end-of-turn token
(`BlindAnswers`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..devices import CPU_FLOAT32, precision_of
from ..losses import Objective
from .collate import IMAGE_PLACEHOLDER, special_tokens_kwargs


def text_only(prompt: str) -> list[dict[str, Any]]:
    text = " ".join(part.strip() for part in prompt.split(IMAGE_PLACEHOLDER) if part.strip())
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


@dataclass
class BlindAnswers:
    """Generated answers and whether each was cut by `max_new_tokens` (no end of sequence).

    A capped answer is scored as an unfinished turn, without the end-of-turn token
    (`open_texts`, the collator's `open_end`). BPO's rejected answer is the model's own
    response to a weakened image (Pi et al. 2024, "Strengthening Multimodal LLM with
    Bootstrapped Preference Optimization"; here, with the image removed), scored token by
    token; its released generation script samples to the model's end of sequence
    (`max_new_tokens=1024`), so a response there is a finished turn. A capped answer's tokens
    are still the model's own response, its ending is not: closing it would train the policy
    away from an end-of-turn the model never produced there, and skipping the pair would drop
    the row's main pair with it (`bpo_form: objective` scores both from one row)."""

    answers: list[str]
    capped: list[bool]

    @property
    def n_capped(self) -> int:
        return sum(self.capped)

    def open_texts(self) -> frozenset[str]:
        return frozenset(a for a, cut in zip(self.answers, self.capped, strict=True) if cut)

    def summary(self, max_new_tokens: int, answers: Iterable[Any]) -> dict[str, int]:
        """What the run reports (its log line, `mmalign_run.json`): the answers generated, those
        capped, and how many of the data's `answers` have a capped answer's text, scored
        unfinished too (the collator's `open_end` sees an answer's text alone)."""
        cut = self.open_texts()
        shared = sum(1 for a in answers if a in cut) if cut else 0
        return {"generated": len(self.answers), "capped": self.n_capped,
                "max_new_tokens": max_new_tokens,
                **({"capped_text_in_data": shared} if shared else {})}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps({"answers": self.answers, "capped": self.capped})

    @classmethod
    def from_json(cls, text: str) -> BlindAnswers | None:
        """The answers a cache entry holds, or None where it is not a whole entry."""
        try:
            entry = json.loads(text)
            answers, capped = list(entry["answers"]), [bool(c) for c in entry["capped"]]
        except (ValueError, TypeError, KeyError):
            return None
        return cls(answers, capped) if len(answers) == len(capped) else None


def summary_line(report: dict[str, int]) -> str:
    """The log line of `BlindAnswers.summary`."""
    shared = report.get("capped_text_in_data", 0)
    return (f"BPO blind answers generated for {report['generated']} rows, {report['capped']} "
            f"cut by vlm.blind_max_new_tokens={report['max_new_tokens']} before they ended "
            "(scored unfinished: no end-of-turn token)"
            + (f"; {shared} answers of the data have a capped answer's text and are scored "
               "unfinished too" if shared else ""))  # fmt: skip


def open_or_capped(open_end: Callable[[str], bool] | None,
                   capped: frozenset[str]) -> Callable[[str], bool]:  # fmt: skip
    """The collator's `open_end`: the answers `open_end` names (PRISM's prefixes) and the
    capped blind answers end without the end-of-turn token."""
    return lambda answer: answer in capped or (open_end is not None and open_end(answer))


def _ended(model: Any, processor: Any, new: torch.Tensor) -> list[bool]:
    """Whether each row of generated tokens `new` holds an end-of-sequence token (one of the
    generation config's, where generation stops; the tokenizer's where it names none)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(processor, "tokenizer", processor), "eos_token_id", None)
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if not ids:
        return [False] * new.shape[0]
    return torch.isin(new, torch.tensor(ids, device=new.device)).any(-1).tolist()


@torch.no_grad()
def _generate(model: Any, processor: Any, conversations: Sequence[list[dict]],
              images: Sequence[list[Any]] | None, *, batch_size: int, max_new_tokens: int,
              desc: str) -> tuple[list[str], list[bool]]:  # fmt: skip
    """(greedy answers, whether each was cut by `max_new_tokens`), batched with left padding
    (generation appends on the right)."""
    tok = getattr(processor, "tokenizer", processor)
    side, tok.padding_side = tok.padding_side, "left"
    answers: list[str] = []
    capped: list[bool] = []
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
            shown = [] if images is None else list(images[start : start + batch_size])
            if any(shown):
                # as the collator lays them out: one list per prompt where one shows several
                # (LLaVA-OneVision tiles an image alone, not one among others), else flat
                several = any(len(ims) > 1 for ims in shown)
                kwargs["images"] = shown if several else [im for ims in shown for im in ims]
            inputs = processor(**kwargs).to(model.device)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]
            answers += [a.strip() for a in processor.batch_decode(new, skip_special_tokens=True)]
            capped += [not ended for ended in _ended(model, processor, new)]
    finally:
        tok.padding_side = side
    return answers, capped


def generate_answers(model: Any, processor: Any, conversations: Sequence[list[dict]],
                     images: Sequence[list[Any]] | None = None, *, batch_size: int = 32,
                     max_new_tokens: int = 32, desc: str = "answers") -> list[str]:  # fmt: skip
    """Greedy answers, batched with left padding (generation appends on the right)."""
    return _generate(model, processor, conversations, images, batch_size=batch_size,
                     max_new_tokens=max_new_tokens, desc=desc)[0]  # fmt: skip


def blind_responses(model: Any, processor: Any, prompts: Sequence[str], *,
                    batch_size: int = 32, max_new_tokens: int = 32) -> BlindAnswers:  # fmt: skip
    """The model's answer to each prompt without its image(s), and which were capped."""
    answers, capped = _generate(
        model, processor, [text_only(p) for p in prompts], None, batch_size=batch_size,
        max_new_tokens=max_new_tokens, desc="blind responses",
    )  # fmt: skip
    return BlindAnswers(answers, capped)


def blind_rows_objective(objective: Objective) -> Objective:
    """The objective of BPO's extra-rows form (`vlm.bpo_form: extra_rows`, the released code):
    each blind pair is an extra row of `main` (rejected = the blind answer), so the `main`
    terms train it and the `blind` terms, which name the form, leave the objective. Each must
    match a `main` term (same loss and arguments): the released code runs one plain DPO."""
    from ..config import ConfigError

    main = [(t.loss, dict(t.kwargs)) for t in objective.terms if t.pair == "main"]
    for i, term in enumerate(objective.terms):
        if term.pair == "blind" and (term.loss, dict(term.kwargs)) not in main:
            raise ConfigError(
                f"objective[{i}]: vlm.bpo_form: extra_rows trains the blind pairs as extra rows "
                f"of the main term, so this blind term ({term.loss} {dict(term.kwargs)}) needs a "
                "main term with the same loss and arguments; use bpo_form: objective to train "
                "it as its own term"
            )
    return Objective([t for t in objective.terms if t.pair != "blind"])


def cache_precision(model: Any, device: torch.device | str) -> list[dict[str, str]]:
    """What a cache key of `model`'s greedy answers adds for where they are generated: the
    device type and dtype once `model` is on `device` (greedy answers can differ on a GPU or
    in bfloat16), or nothing for the CPU in float32, the only way they were generated before
    the key named it (`devices.CPU_FLOAT32`): a CPU float32 key stays as it was, and no other
    run reads its entries. (Entries from before the `capped` record are regenerated anyway:
    the recipe's key names it.)"""
    here = {"device": torch.device(device).type, "dtype": precision_of(model)["dtype"]}
    return [] if here == CPU_FLOAT32 else [here]
