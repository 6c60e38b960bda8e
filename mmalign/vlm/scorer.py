"""The VLM pair scorer: a `SequenceBatch` -> `dict[str, PairScores]` in one forward per model.

A score is the sum of the completion tokens' log-probs (DPO, Rafailov et al. 2023, Eq. 7 with
the policy's sequence log-likelihood; METHODS.md section 3), with the token count beside it for
length-normalised losses (SimPO, IPO, ORPO).

Speed levers over the public toolkits, which encode each image once per sequence and again for
the reference:
- every distinct image of a step is encoded once and its features are handed to the language
  model through transformers' `mm_encoder_outputs`, for every sequence that shows it;
- when nothing between the pixels and the language model trains (the default: LoRA on the
  language model, vision tower and projector frozen), those features are computed without a
  graph and reused by the reference pass too;
- the language model head runs only at the completion positions, so the [S, L, vocab] logits
  of the whole sequence are never materialised.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Literal

import torch

from ..losses import PairScores
from .collate import SequenceBatch
from .load import image_path_trainable

Reference = Literal["adapters", "copy", "precomputed", "none"]


def _core(model: Any) -> Any:
    """The transformers *ForConditionalGeneration under PEFT / DDP wrappers."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def image_features(core: Any, batch: SequenceBatch) -> list[torch.Tensor]:
    """One feature tensor [tokens, hidden] per vision unit of the batch."""
    if not batch.vision:
        return []
    out = core.model.get_image_features(**batch.vision, return_dict=True)
    features = out.pooler_output
    if isinstance(features, torch.Tensor):
        features = list(features)
    return list(features)


def sequence_logps(
    core: Any, batch: SequenceBatch, features: list[torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion-token log-probs [S], completion tokens [S])."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        **batch.extra,
    }
    if batch.vision:
        if batch.layout == "image":
            assert features is not None
            ordered = [features[u] for units in batch.units for u in units]
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                pooler_output=tuple(ordered))}  # fmt: skip
            if "image_grid_thw" in batch.vision:  # M-RoPE positions follow each image's grid
                grid = batch.vision["image_grid_thw"]
                kwargs["image_grid_thw"] = grid[[u for units in batch.units for u in units]]
            if "image_sizes" in batch.vision:
                sizes = batch.vision["image_sizes"]
                kwargs["image_sizes"] = sizes[[u for units in batch.units for u in units]]
        else:  # per-prompt layout: each sequence gets its prompt's pixels
            index = torch.tensor([units[0] for units in batch.units])
            kwargs.update({k: v[index.to(v.device)] for k, v in batch.vision.items()})
    hidden = core.model(**kwargs, use_cache=False).last_hidden_state
    # Token t is predicted from position t-1: score the completion tokens only.
    target_mask = batch.completion_mask[:, 1:]
    rows = torch.nonzero(target_mask, as_tuple=True)[0]
    h = hidden[:, :-1][target_mask]
    targets = batch.input_ids[:, 1:][target_mask]
    logits = core.get_output_embeddings()(h).float()
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
    n = batch.input_ids.shape[0]
    sums = torch.zeros(n, device=hidden.device, dtype=token_logps.dtype)
    sums = sums.index_add(0, rows, token_logps)
    counts = target_mask.sum(-1)
    return sums, counts


class VLMPairScorer:
    """Policy (and reference) scores of every pair in a batch.

    `reference`: "adapters" (the policy with its LoRA disabled), "copy" (a frozen copy made
    here, for full fine-tuning), "precomputed" (scores looked up in `reference_scores`, a
    dict from (row, variant, completion) to a float, filled by one cached pass), or "none".
    """

    def __init__(self, model: Any, reference: Reference = "adapters",
                 reference_scores: dict | None = None):  # fmt: skip
        self.reference = reference
        self.reference_model = None
        if reference == "copy":
            self.reference_model = copy.deepcopy(_core(model)).eval().requires_grad_(False)
        if reference == "adapters" and not hasattr(getattr(model, "module", model),
                                                   "disable_adapter"):  # fmt: skip
            raise ValueError("reference 'adapters' needs a PEFT model; use 'copy' or LoRA")
        self.reference_scores = reference_scores

    @contextlib.contextmanager
    def _reference(self, model: Any):
        if self.reference == "adapters":
            with getattr(model, "module", model).disable_adapter():
                yield _core(model)
        else:
            yield self.reference_model

    def reference_logps(self, model: Any, batch: SequenceBatch,
                        features: list[torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        with torch.no_grad(), self._reference(model) as ref:
            if features is None or batch.layout != "image":
                features = image_features(ref, batch)
            return sequence_logps(ref, batch, features)[0]

    def __call__(self, model: Any, batch: SequenceBatch, *,
                 with_reference: bool) -> dict[str, PairScores]:  # fmt: skip
        core = _core(model)
        frozen = not image_path_trainable(core)
        with torch.no_grad() if frozen else contextlib.nullcontext():
            features = image_features(core, batch) if batch.layout == "image" else None
        logps, counts = sequence_logps(core, batch, features)
        ref = None
        if with_reference:
            if self.reference == "none":
                raise ValueError("the objective needs a reference but the scorer has none")
            if self.reference == "precomputed":
                ref = self._lookup(batch, logps.device)
            else:
                ref = self.reference_logps(model, batch, features if frozen else None)
        out = {}
        for name, (c, r) in batch.pairs.items():
            out[name] = PairScores(
                chosen=logps[c], rejected=logps[r],
                ref_chosen=None if ref is None else ref[c],
                ref_rejected=None if ref is None else ref[r],
                chosen_len=counts[c], rejected_len=counts[r],
                label=batch.label if name == "main" else None,
            )  # fmt: skip
        return out

    def _lookup(self, batch: SequenceBatch, device: torch.device) -> torch.Tensor:
        assert self.reference_scores is not None
        values = []
        for row, variant, completion in batch.sequence_keys:
            key = (batch.rows[row], variant, completion)
            if key not in self.reference_scores:
                raise KeyError(f"no precomputed reference score for row {key[0]} ({variant})")
            values.append(self.reference_scores[key])
        return torch.tensor(values, device=device)
