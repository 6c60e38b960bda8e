"""PRISM's stage tags (Li et al. 2025, section 3.1) as special tokens of a VLM's tokenizer.

The eight tags (`mmalign.data.prism_cot`) become one token each (`add_stage_tokens`), so a
stage ends at one token and generation can stop there; the embedding grows to fit them and
their rows train with the adapter (`vlm.prism: true`). `decode_keep_tags` decodes a generation
with its tags (`skip_special_tokens` would drop them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...data.prism_cot import (
    STAGES,
    TAG_PATTERN,
    TAGS,
    ParsedCoT,
    close_tag,
    final_answer,
    format_cot,
    is_partial,
    is_unclosed,
    open_ended,
    open_tag,
    parse_stages,
)

__all__ = [
    "STAGES", "TAGS", "ParsedCoT", "TokenReport", "add_stage_tokens", "close_tag",
    "decode_keep_tags", "final_answer", "format_cot", "is_partial", "is_unclosed", "match_vocab",
    "open_ended", "open_tag", "parse_stages", "special_ids_to_drop", "tag_ids",
]  # fmt: skip


# --------------------------------------------------------------------------- special tokens


def tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def tag_ids(processor: Any) -> dict[str, int]:
    """Tag -> token id; raises when a tag is not one token of the tokenizer."""
    tok = tokenizer_of(processor)
    vocab = tok.get_vocab()
    missing = [t for t in TAGS if t not in vocab]
    if missing:
        raise ValueError(
            f"the tokenizer has no token for {', '.join(missing)}: add the PRISM stage tags "
            "first (vlm.prism: true in a recipe, or mmalign.vlm.prism.format.add_stage_tokens)"
        )
    return {t: vocab[t] for t in TAGS}


@dataclass
class TokenReport:
    """What `add_stage_tokens` did: tags added, tags the tokenizer already had, the
    embedding rows before and after, and the ids of every tag."""

    added: list[str]
    present: list[str]
    rows_before: int
    rows_after: int
    ids: dict[str, int]

    def __str__(self) -> str:
        had = f"; already present: {len(self.present)}" if self.present else ""
        return (f"PRISM stage tags: added {len(self.added)}{had}; embedding rows "
                f"{self.rows_before} -> {self.rows_after}")  # fmt: skip


def match_vocab(model: Any, processor: Any) -> tuple[int, int]:
    """Grow the input (and tied output) embeddings to the tokenizer's size when it is larger;
    rows that already exist (Qwen2-VL keeps spare rows) are kept. Returns (before, after)."""
    tok = tokenizer_of(processor)
    before = int(model.get_input_embeddings().weight.shape[0])
    if len(tok) > before:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    return before, int(model.get_input_embeddings().weight.shape[0])


@torch.no_grad()
def add_stage_tokens(model: Any, processor: Any) -> TokenReport:
    """Add the eight tags as special tokens (those the tokenizer lacks), grow the embeddings,
    and start each new tag's row at the mean embedding of its stage name's tokens ("problem";
    "end problem" for a closing tag), so the rows start apart and in a sensible place. A
    tokenizer that already has the tags is left as it is and reported."""
    from tokenizers import AddedToken

    tok = tokenizer_of(processor)
    vocab = tok.get_vocab()
    present = [t for t in TAGS if t in vocab]
    added = [t for t in TAGS if t not in vocab]
    if added:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in added],
                       special_tokens=True)  # fmt: skip
    before, after = match_vocab(model, processor)
    ids = tag_ids(processor)
    if added:
        emb = model.get_input_embeddings().weight
        for t in added:
            stage = TAG_PATTERN.fullmatch(t)
            assert stage is not None
            name = ("end " if stage.group(1) else "") + stage.group(2).lower()
            pieces = tok(name, add_special_tokens=False)["input_ids"]
            pieces = [i for i in pieces if i < before] or list(range(min(before, 64)))
            emb[ids[t]] = emb[pieces].mean(0)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():  # untied head
            for t in added:
                out.weight[ids[t]] = emb[ids[t]]
    return TokenReport(added, present, before, after, ids)


def special_ids_to_drop(processor: Any) -> frozenset[int]:
    """The special token ids `decode_keep_tags` drops: all but the stage tags. `get_vocab`
    builds the whole vocabulary each call, so a caller decoding many samples computes this
    once and passes it."""
    tok = tokenizer_of(processor)
    vocab = tok.get_vocab()
    keep = {vocab[t] for t in TAGS} if all(t in vocab for t in TAGS) else set()
    return frozenset(set(tok.all_special_ids) - keep)


def decode_keep_tags(processor: Any, ids: Any, drop: frozenset[int] | None = None) -> str:
    """Decode generated ids keeping the stage tags and dropping every other special token
    (end of turn, padding): `skip_special_tokens=True` would drop the tags too. `drop`:
    `special_ids_to_drop(processor)`, computed here when not given."""
    tok = tokenizer_of(processor)
    drop = special_ids_to_drop(processor) if drop is None else drop
    return tok.decode([int(i) for i in ids if int(i) not in drop], skip_special_tokens=False)
