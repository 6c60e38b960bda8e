"""Shared-prompt packing: a prompt and every completion scored under it in one row.

A DPO step scores the chosen and the rejected answer under the same prompt, and for a VLM the
prompt (hundreds of image tokens for LLaVA, 16 of toy-vlm's 32) is most of each sequence.
Packed, a row holds the prompt once and the completions after it,

    [prompt][chosen][rejected]    positions 0..p-1, p..p+c-1, p..p+r-1

with a 4-D attention mask in which each completion sees the prompt and itself only, so every
token gets the same context, position and therefore the same log-prob as in its own
sequence, while the prompt runs through the model once instead of twice (forward and
backward). This is the prefix-sharing idea of Wang et al. 2024 ("Accelerating Direct
Preference Optimization with Prefix Sharing"), applied to image+text prompts.

It needs a model whose positions are one index per token, whose attention takes a custom
4-D mask used as given, and whose language model attends to the whole causal past (a sliding
window would be dropped by the 4-D mask: packed != unpacked once a sequence outgrows it), and
the image features must not depend on the row they land in: each image's features are
scattered into its image tokens in row order, so a prompt held once gets exactly the features
it gets alone. It is allowed only where a test shows packed scores and gradients equal the
unpacked ones: LLaVA (toy-vlm, LLaVA-1.5; tests/test_vlm_packing.py) and LLaVA-OneVision
(tests/test_review9_onevision_packing.py) under sdpa or eager attention. Qwen2-VL's M-RoPE
positions (3 per token, set by the image grid) and flash-attention (no 4-D masks) keep one
sequence per completion, as do LLaVA-NeXT and Idefics3/SmolVLM until such a test covers them
(their language models take 1-D positions, so they are candidates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

# model_type of the *ForConditionalGeneration config: 1-D positions, transformers' generic
# causal-mask path (a 4-D mask is used as given), and packed == unpacked tested.
# LLaVA-OneVision qualifies like LLaVA: its Qwen2 language model takes 1-D positions and a 4-D
# mask, and its image features, anyres tiles of a lone image or the base tile of one among
# others, are computed per image before the language model (`scorer._tiled_apart`) and
# scattered into the image tokens in order, whatever row holds the prompt.
PACKABLE_MODEL_TYPES = frozenset({"llava", "llava_onevision"})


def text_attention(core: Any) -> str:
    """The language model's attention implementation ("sdpa", "eager", "flash_attention_2")."""
    config = core.config
    text = getattr(config, "text_config", None) or config
    return str(getattr(text, "_attn_implementation", None) or "eager")


def full_attention(core: Any) -> bool:
    """Whether every layer of the language model attends to the whole causal past. A sliding
    window (Mistral's `sliding_window`, Qwen2's `use_sliding_window`) is applied when
    transformers builds the mask from a 2-D one, and dropped from a 4-D mask, which is used
    as given: a packed row would see further back than its sequence alone."""
    config = core.config
    text = getattr(config, "text_config", None) or config
    layers = getattr(text, "layer_types", None) or ()
    return getattr(text, "sliding_window", None) is None and all(
        t == "full_attention" for t in layers
    )


def supports_packing(core: Any) -> bool:
    """Whether `core` (a transformers VLM) scores packed rows exactly like separate ones."""
    return (
        core.config.model_type in PACKABLE_MODEL_TYPES
        and text_attention(core) in ("sdpa", "eager")
        and full_attention(core)
    )


@dataclass
class Scored:
    """Where the scored tokens are: token k is `input_ids[row[k], target[k]]`, predicted from
    the hidden state at `[row[k], source[k]]`, and belongs to sequence `sequence[k]`."""

    row: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    sequence: torch.Tensor


@dataclass
class Packed:
    """Packed rows: ids, positions and a 4-D additive mask, the sequence whose prompt each
    row holds (its vision units and extras), and the scored tokens."""

    input_ids: torch.Tensor  # [P, L]
    position_ids: torch.Tensor  # [P, L]
    attention_mask: torch.Tensor  # [P, 1, L, L]: True where attended, or 0 / dtype min
    prompt_sequence: list[int]  # per row: a sequence of the batch with this row's prompt
    gather: tuple[torch.Tensor, torch.Tensor]  # per packed token: (sequence, position)
    scored: Scored


def unpacked_scored(completion_mask: torch.Tensor) -> Scored:
    """Scored tokens of one-sequence-per-row batches: token t is predicted from t-1."""
    target_mask = completion_mask[:, 1:]
    rows, cols = torch.nonzero(target_mask, as_tuple=True)
    return Scored(rows, cols, cols + 1, rows)


def pack(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    prompt_keys: Sequence[Any],
    *,
    pad_id: int,
    dtype: torch.dtype | None = None,
) -> Packed | None:
    """Pack right-padded sequences [S, L] that share prompts (equal `prompt_keys`) into one
    row per prompt. None when a group's prompt tokens differ (nothing to share safely).

    `dtype`: None gives a boolean mask (True = attended; what sdpa takes under any autocast
    dtype), a float dtype an additive one (eager attention adds it to the scores)."""
    device = input_ids.device
    lengths = attention_mask.sum(-1).tolist()
    # the prompt ends where the completion starts (first scored token)
    starts = completion_mask.int().argmax(-1).tolist()
    groups: dict[Any, list[int]] = {}
    for s, key in enumerate(prompt_keys):
        groups.setdefault(key, []).append(s)
    row_seq, row_pos, row_seg, row_position = [], [], [], []
    sc_row, sc_src, sc_tgt, sc_seq = [], [], [], []
    for r, seqs in enumerate(groups.values()):
        first = seqs[0]
        p = starts[first]
        for s in seqs[1:]:
            if starts[s] != p or not torch.equal(input_ids[s, :p], input_ids[first, :p]):
                return None
        seq_idx, pos_idx, seg, position = [first] * p, list(range(p)), [0] * p, list(range(p))
        for k, s in enumerate(seqs, 1):
            c = lengths[s] - p
            at = len(seq_idx)  # where this completion starts in the packed row
            seq_idx += [s] * c
            pos_idx += range(p, p + c)
            seg += [k] * c
            position += range(p, p + c)
            # its first token is predicted from the prompt's last one, then from its own
            sc_row += [r] * c
            sc_src += [p - 1, *range(at, at + c - 1)]
            sc_tgt += range(at, at + c)
            sc_seq += [s] * c
        row_seq.append(seq_idx)
        row_pos.append(pos_idx)
        row_seg.append(seg)
        row_position.append(position)
    n, longest = len(row_seq), max(len(x) for x in row_seq)
    seq_t = torch.zeros(n, longest, dtype=torch.long)
    pos_t = torch.zeros(n, longest, dtype=torch.long)
    seg_t = torch.full((n, longest), -1, dtype=torch.long)
    position_t = torch.zeros(n, longest, dtype=torch.long)
    for i in range(n):
        m = len(row_seq[i])
        seq_t[i, :m] = torch.tensor(row_seq[i])
        pos_t[i, :m] = torch.tensor(row_pos[i])
        seg_t[i, :m] = torch.tensor(row_seg[i])
        position_t[i, :m] = torch.tensor(row_position[i])
    seq_t, pos_t, seg_t, position_t = (t.to(device) for t in (seq_t, pos_t, seg_t, position_t))
    ids = input_ids[seq_t, pos_t].masked_fill(seg_t < 0, pad_id)
    q, k = seg_t[:, :, None], seg_t[:, None, :]
    causal = torch.ones(longest, longest, dtype=torch.bool, device=device).tril()
    # a completion sees the prompt and itself; padding sees the prompt (no empty rows)
    allowed = causal & (k >= 0) & ((k == 0) | (k == q))
    mask = allowed[:, None]
    if dtype is not None:
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    scored = Scored(*(torch.tensor(x, dtype=torch.long, device=device)
                      for x in (sc_row, sc_src, sc_tgt, sc_seq)))  # fmt: skip
    prompt_sequence = [seqs[0] for seqs in groups.values()]
    return Packed(ids, position_t, mask, prompt_sequence, (seq_t, pos_t), scored)
