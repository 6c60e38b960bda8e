"""Sampling a search expansion's children from one encoding of their shared prompt, each row
leaving the batch as soon as it has finished (PRISM's search, Li et al. 2025, section 3.2).

`model.generate` keeps a finished row in its batch, fed padding, until the last row stops, and
with `num_return_sequences` it encodes a prompt once per sample. In a batched search call on
toy-vlm the finished rows were half of the row-steps computed (docs/results.md, "PRISM on
toy-vlm"). `sample_shared` encodes each prompt once (image included), repeats the cache per
sample, then decodes one token per step for the rows still running only: a row that writes
its stop token or an end token is dropped from the batch and its cache.

Decoding is plain: greedy, or softmax sampling at a temperature (what `generate` does with
`top_k=0, top_p=1.0` and no other processor). A model whose generation config asks for more
(a repetition penalty, suppressed tokens, a minimum length, ...) is not `plain_sampling` and
takes `generate`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch

# Families whose positions are the count of the attention mask (LLaVA and toy-vlm: a Llama-style
# language model), so a prompt's cache can be computed once and continued by each sample.
# Qwen2-VL derives its multimodal rotary positions from the image grid during the prefill and
# keeps per-batch deltas on the model, so it takes `generate`'s own `num_return_sequences`.
SHARED_PREFIX_FAMILIES = ("llava",)

# Generation-config fields that add a logits processor to `generate`, at their neutral values.
_NEUTRAL: dict[str, Any] = {
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "min_length": 0, "min_new_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None,
    "exponential_decay_length_penalty": None, "renormalize_logits": False, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "guidance_scale": None,
    "diversity_penalty": 0.0, "num_beams": 1, "top_h": None, "remove_invalid_values": False,
    "watermarking_config": None,
}  # fmt: skip


def shares_prefix(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) in SHARED_PREFIX_FAMILIES


def plain_sampling(model: Any) -> bool:
    """True when `generate` would apply nothing but a temperature (its config is neutral)."""
    config = getattr(model, "generation_config", None)
    return config is None or all(getattr(config, k, v) in (v, None) for k, v in _NEUTRAL.items())


@functools.cache
def forward_names(cls: type) -> tuple[str, str | None]:
    """The forward's name for a KV cache ("cache" in transformers 5, "past_key_values" before)
    and for keeping only the last logits, if it has one; once per model class."""
    params = inspect.signature(cls.forward).parameters
    keep = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
    return ("cache" if "cache" in params else "past_key_values"), keep


def _names(model: Any) -> tuple[str, str | None]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return forward_names(type(base))


def prefill(model: Any, inputs: Any) -> Any:
    """The KV cache of each left-padded prompt but its last token (image included), positions
    as `generate` derives them from the mask; only the last position reaches the vocabulary."""
    _, keep = _names(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    head = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    if keep is not None:  # the prefill's logits are never read: not [batch, length, vocab]
        head[keep] = 1
    pos = (mask[:, :-1].long().cumsum(-1) - 1).masked_fill(mask[:, :-1] == 0, 0)
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos,
                use_cache=True, **head)  # fmt: skip
    return _cache_of(out)


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


@torch.no_grad()
def sample_shared(model: Any, inputs: Any, samples: int, *, max_new_tokens: int,
                  eos: Sequence[int], pad: int, stops: torch.Tensor | None = None,
                  sample: bool = True, temperature: float = 1.0) -> torch.Tensor:  # fmt: skip
    """New tokens, `[prompts * samples, max_new_tokens]` (a prompt's samples side by side, as
    `num_return_sequences` orders them), `pad` after a row's end. A row ends at an `eos` token,
    at its prompt's token in `stops` (one per prompt), or after `max_new_tokens`."""
    cache_name, keep = _names(model)
    extra = {} if keep is None else {keep: 1}
    cache = prefill(model, inputs)
    cache.batch_repeat_interleave(samples)
    mask = inputs["attention_mask"].repeat_interleave(samples, 0)
    token = inputs["input_ids"][:, -1].repeat_interleave(samples, 0)
    device = token.device
    pos = mask.long().sum(-1) - 1  # the last prompt token's position
    ends = torch.tensor(list(eos), device=device)
    stop = None if stops is None else stops.to(device).repeat_interleave(samples)
    rows = torch.arange(len(token), device=device)  # which output row each batch row writes
    out = torch.full((len(token), max_new_tokens), pad, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        out_step = model(input_ids=token[:, None], attention_mask=mask,
                         position_ids=pos[:, None], use_cache=True, **{cache_name: cache},
                         **extra)  # fmt: skip
        logits = out_step.logits[:, -1].float()
        cache = _cache_of(out_step)
        if sample:
            token = torch.multinomial(torch.softmax(logits / temperature, -1), 1)[:, 0]
        else:
            token = logits.argmax(-1)
        out[rows, step] = token
        done = torch.isin(token, ends)
        if stop is not None:
            done |= token == stop
        finished = int(done.sum())  # one sync with the device per step
        if finished == len(rows) or step == max_new_tokens - 1:
            break
        if finished:  # finished rows leave the batch and the cache
            live = (~done).nonzero()[:, 0]
            cache.batch_select_indices(live)
            rows, token, mask, pos = rows[live], token[live], mask[live], pos[live]
            stop = None if stop is None else stop[live]
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
        pos = pos + 1
    return out
