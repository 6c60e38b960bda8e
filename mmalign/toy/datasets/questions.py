"""The VLM kinds, built from toy-vlm's own questions (`mmalign.toy.qa`): `vqa` (SFT / DPO),
`hallucination` (Re-Align rDPO) and `safety` (BPO / PRISM; with `near_synonyms`, the
likelihood-displacement set of Razin et al.)."""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..qa import FORBIDDEN_REQUESTS, REFUSAL, make_forbidden, make_qa, sample_qa
from ..render import STYLES
from ..world import COLORS, SHAPES, ToyPrompt, is_heldout
from .common import (
    Built,
    finish,
    options_of,
    quantise,
    render_mixed,
    stream_generator,
    stream_seed,
)


def _qa(n: int, split: str, seed: int, kind: str):
    """`n` balanced QA items and their renders from toy-vlm's own training generator."""
    items, images = sample_qa(n, split, stream_generator(seed, "qa", kind))
    return items, quantise(images)


def _wrong_answer(item, rng: random.Random) -> str:
    """A wrong answer of the same type: the other of yes/no, another colour or shape."""
    if item.kind == "presence":
        return "no" if item.answer == "yes" else "yes"
    vocab = SHAPES if item.kind == "shape" else COLORS
    return rng.choice([v for v in vocab if v != item.answer])


def _text_rows(kind: str, n: int, seed: int, prompt_split: str, make) -> Built:
    """Rows `make(item, image, rng) -> dict | str` (a str is a skip reason) for `n` QA items."""
    items, images = _qa(n, prompt_split, seed, kind)
    rng = random.Random(stream_seed(seed, kind))
    built = Built([], "text")
    for i, (item, image) in enumerate(zip(items, images, strict=True)):
        row = make(i, item, image, rng)
        if isinstance(row, str):
            built.skipped[row] += 1
        else:
            built.rows.append(
                {
                    "prompt": item.question,
                    "label": 1.0,
                    "image": image,
                    "source": f"toy:{kind}",
                    **row,
                }
            )
    built.stats["question_types"] = dict(Counter(item.kind for item in items))
    return built


def build_vqa(
    out_dir: str | Path, *, n: int = 64, seed: int = 0, prompt_split: str = "train"
) -> dict[str, Any]:
    """SFT/DPO data for toy-vlm: question, correct answer (chosen), wrong answer of the same
    type (rejected), the image. Label 1."""
    started, options = time.perf_counter(), options_of(locals())

    def make(i, item, image, rng):
        return {"chosen": item.answer, "rejected": _wrong_answer(item, rng)}

    built = _text_rows("vqa", n, seed, prompt_split, make)
    return finish(
        "vqa", out_dir, built, n=n, seed=seed, split="train", options=options, started=started
    )


def _similar(
    prompt: ToyPrompt, attribute: str, split: str, rng: random.Random, value: str | None = None
) -> ToyPrompt | None:
    """A prompt differing from `prompt` in exactly `attribute` (set to `value`, else a random
    other value), valid and in the same split; None when there is none."""
    vocab = SHAPES if attribute == "shape" else COLORS
    options = []
    for v in [value] if value is not None else vocab:
        if v == getattr(prompt, attribute):
            continue
        try:
            other = replace(prompt, **{attribute: v})
        except ValueError:  # shape and background the same colour
            continue
        if split == "all" or is_heldout(other) == (split == "heldout"):
            options.append(other)
    return rng.choice(options) if options else None


def _answer(prompt: ToyPrompt, item) -> str:
    """The answer to `item`'s question about an image of `prompt`."""
    if item.kind != "presence":
        return getattr(prompt, "color" if item.kind == "color" else item.kind)
    asked = item.question.rstrip("?").split()
    shown = prompt.color in asked and prompt.shape in asked
    return "yes" if shown else "no"


def build_hallucination(
    out_dir: str | Path, *, n: int = 64, seed: int = 0, prompt_split: str = "train"
) -> dict[str, Any]:
    """Re-Align rDPO analog: chosen = the answer true to the image, rejected = the answer true
    to `retrieved_image`, a render of a prompt differing in exactly the attribute the question
    is about (a colour, the shape, the background; for presence questions, the asked object's
    colour or shape). The retrieved prompt stays in `prompt_split` (no held-out leak)."""
    started, options = time.perf_counter(), options_of(locals())
    retrieved: list[ToyPrompt] = []
    rewritten = 0

    def make(i, item, image, rng):
        nonlocal rewritten
        p, other = item.prompt, None
        if item.kind in ("color", "shape", "background"):
            other = _similar(p, item.kind, prompt_split, rng)
        elif item.answer == "no":  # show the asked object: it differs in colour or shape
            asked = item.question.rstrip("?").split()
            color = next(w for w in asked if w in COLORS)
            attr = "color" if color != p.color else "shape"
            value = color if attr == "color" else next(w for w in asked if w in SHAPES)
            other = _similar(p, attr, prompt_split, rng, value)
            if other is None:  # the asked object cannot be drawn here: ask about the shown one
                item = make_qa(p, "presence", rng.randrange(4), True, "color", 0)
                rewritten += 1
        if item.kind == "presence" and item.answer == "yes":
            other = _similar(p, rng.choice(("color", "shape")), prompt_split, rng)
        if other is None:
            return "no_similar_image"
        retrieved.append(other)
        return {
            "prompt": item.question,
            "chosen": item.answer,
            "rejected": _answer(other, item),
            "retrieved_image": None,
        }

    built = _text_rows("hallucination", n, seed, prompt_split, make)
    styles = [
        STYLES[int(s)]
        for s in torch.randint(
            2, (len(retrieved),), generator=stream_generator(seed, "retrieved-style")
        )
    ]
    images = render_mixed(retrieved, styles, stream_generator(seed, "retrieved"))
    for row, image in zip(built.rows, images, strict=True):
        row["retrieved_image"] = image
    built.stats["questions_rewritten"] = rewritten
    return finish(
        "hallucination",
        out_dir,
        built,
        n=n,
        seed=seed,
        split="train",
        options=options,
        started=started,
    )


# Refusals that differ from REFUSAL in one or two tokens: the toy's analog of Razin et al.'s
# "No" vs "Never" (likelihood displacement). toy-vlm gives these pairs LN-CHES near 0, against
# about -30 for refusal vs compliance (docs/results.md, preference-data diagnostics).
NEAR_SYNONYM_REFUSALS = (
    "I cannot help with that.",
    "I cannot help with this request.",
    "I can not help with that request.",
)


def _synonym_rows(order: list[str], share: float, seed: int) -> dict[int, str]:
    """Row index -> near-synonym refusal for round(share * forbidden rows) forbidden rows,
    from their own seeded stream (share 0 leaves every other draw of the build unchanged)."""
    if not 0 <= share <= 1:
        raise ValueError(f"near_synonyms is the share of forbidden rows in [0, 1], got {share}")
    forbidden = [i for i, source in enumerate(order) if source == "forbidden"]
    rng = random.Random(stream_seed(seed, "safety-synonyms"))
    picked = sorted(rng.sample(forbidden, round(share * len(forbidden))))
    return {i: rng.choice(NEAR_SYNONYM_REFUSALS) for i in picked}


def build_safety(
    out_dir: str | Path,
    *,
    n: int = 64,
    seed: int = 0,
    prompt_split: str = "train",
    near_synonyms: float = 0.0,
    offtopic: bool = False,
    synonym_side: str = "rejected",
) -> dict[str, Any]:
    """BPO / PRISM analog, `source` "forbidden" or "benign" (n // 2 forbidden, shuffled).
    Forbidden: a `FORBIDDEN_REQUESTS` request about the image; chosen = REFUSAL, rejected =
    compliance. Benign: a toy-vlm question; chosen = the answer, rejected = REFUSAL.

    `near_synonyms`: the share of forbidden rows whose rejected answer is instead a
    `NEAR_SYNONYM_REFUSALS` wording (`source` "synonym"): pairs that DPO can only separate by
    lowering both refusals (Razin et al., "Unintentional Unalignment", Sections 3 and 6).
    `offtopic`: the other forbidden rows reject an off-topic answer (the one-word answer to a
    plain question about the image, `source` "offtopic") instead of the compliance, so the
    compliance never appears in the data: the third response displacement can move mass to.
    `synonym_side`: where the near-synonym wording goes, "rejected" (REFUSAL preferred) or
    "chosen" (REFUSAL, toy-vlm's own likely refusal, dispreferred: as when a reward model ranks
    two sampled refusals, Razin et al. Section 6)."""
    if synonym_side not in ("rejected", "chosen"):
        raise ValueError(f"synonym_side is 'rejected' or 'chosen', got {synonym_side!r}")
    started, options = time.perf_counter(), options_of(locals())
    order = ["forbidden"] * (n // 2) + ["benign"] * (n - n // 2)
    random.Random(stream_seed(seed, "safety-order")).shuffle(order)
    synonyms = _synonym_rows(order, near_synonyms, seed)

    def make(i, item, image, rng):
        if order[i] == "benign":
            return {"chosen": item.answer, "rejected": REFUSAL, "source": "benign"}
        template = rng.randrange(len(FORBIDDEN_REQUESTS))
        comply = make_forbidden(item.prompt, template, rng.randrange(100, 1000), refuse=False)
        if i in synonyms:
            pair = (REFUSAL, synonyms[i])[:: 1 if synonym_side == "rejected" else -1]
            return {"prompt": comply.question, "chosen": pair[0], "rejected": pair[1],
                    "source": "synonym"}  # fmt: skip
        if offtopic:
            return {"prompt": comply.question, "chosen": REFUSAL, "rejected": item.answer,
                    "source": "offtopic"}  # fmt: skip
        return {"prompt": comply.question, "chosen": REFUSAL, "rejected": comply.answer,
                "source": "forbidden"}  # fmt: skip

    built = _text_rows("safety", n, seed, prompt_split, make)
    built.stats["sources"] = dict(Counter(r["source"] for r in built.rows))
    return finish(
        "safety", out_dir, built, n=n, seed=seed, split="train", options=options, started=started
    )
