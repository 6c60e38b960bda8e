"""The VLM pair scorer: a `SequenceBatch` -> `dict[str, PairScores]` in one forward per model.

A score is the sum of the completion tokens' log-probs (DPO, Rafailov et al. 2023, Eq. 7 with
the policy's sequence log-likelihood; METHODS.md section 3), with the token count beside it for
length-normalised losses (SimPO, IPO, ORPO).

Speed levers over the public toolkits, which encode each image once per sequence and again for
the reference:
- every distinct image of a step is encoded once (Idefics3 / SmolVLM, whose processors lay
  pixels out per prompt: every prompt's images once) and its features are handed to the
  language model through transformers' `mm_encoder_outputs`, for every sequence that shows it;
- when nothing between the pixels and the language model trains (the default: LoRA on the
  language model, vision tower and projector frozen), those features are computed without a
  graph and reused by the reference pass too;
- the language model head runs only at the completion positions, so the [S, L, vocab] logits
  of the whole sequence are never materialised.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any, Literal

import torch

from ..adapters import AdapterSwitch
from ..losses import PairScores
from .collate import SequenceBatch
from .dropout import evaluating
from .packing import (
    Packed,
    Scored,
    pack,
    supports_packing,
    text_attention,
    unpacked_scored,
)
from .parts import image_path_trainable

Reference = Literal["adapters", "copy", "precomputed", "none"]


def _core(model: Any) -> Any:
    """The transformers *ForConditionalGeneration under PEFT / DDP wrappers."""
    m = getattr(model, "module", model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


def as_forward(model: Any, run: Callable[[], Any]) -> Any:
    """`run()` as the forward of `model`'s DistributedDataParallel wrapper, if it has one.

    The scorer calls the language model inside the wrapper directly (its hidden states, not the
    full logits). DDP averages the gradients across processes only for a backward that follows
    its own forward (which arms its reducer); without one each process stepped on its own
    half-batch gradient and the replicas drifted apart. So the policy pass runs as the wrapped
    module's forward for one call: the instance attribute shadows the class's `forward`
    (accelerate's mixed-precision wrapper, itself an instance attribute, is put back after)."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return run()
    inner = model.module
    own = inner.__dict__.get("forward")
    inner.forward = run
    try:
        return model()
    finally:
        if own is None:
            del inner.forward
        else:
            inner.forward = own


def image_features(core: Any, batch: SequenceBatch) -> list[torch.Tensor]:
    """One feature tensor [tokens, hidden] per vision unit of the batch: per distinct image, or
    per prompt in the per-prompt layout (Idefics3 and SmolVLM pool a prompt's images into one
    tensor); none where the model does not give one per prompt there (its forward then encodes
    each sequence's pixels, `completion_hidden`)."""
    if not batch.vision:
        return []
    if "batch_num_images" in batch.vision:
        return _tiled_apart(core, batch.vision)
    out = core.model.get_image_features(**batch.vision, return_dict=True)
    features = out.pooler_output
    if isinstance(features, torch.Tensor):
        features = list(features)
    features = list(features)
    if batch.layout == "prompt" and len(features) != len(batch.vision["pixel_values"]):
        return []
    return features


def _tiled_apart(core: Any, vision: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """LLaVA-OneVision's features per image: one shown alone in its prompt is tiled (anyres),
    one shown among others is its base tile, as its processor expanded each (the collator's
    per-image `batch_num_images`, the number of images of its prompt). `get_image_features`
    tiles the images its `batch_num_images` counts alone, so the two kinds are encoded apart:
    those shown among others as one group of them all (a lone one beside a copy of itself, as
    a group of one would be tiled)."""
    shown_with = vision["batch_num_images"].tolist()
    inputs = {k: v for k, v in vision.items() if k != "batch_num_images"}
    alone = [i for i, n in enumerate(shown_with) if n == 1]
    among = [i for i, n in enumerate(shown_with) if n != 1]
    features: list[Any] = [None] * len(shown_with)
    for group, counts in ((alone, None), (among if len(among) > 1 else among * 2, True)):
        if not group:
            continue
        index = torch.tensor(group, device=inputs["pixel_values"].device)
        kwargs = {k: v[index.to(v.device)] for k, v in inputs.items()}
        if counts:
            kwargs["batch_num_images"] = torch.tensor([len(group)])
        out = core.model.get_image_features(**kwargs, return_dict=True).pooler_output
        for i, f in zip(group, out, strict=True):
            features[i] = f
    return features


def completion_hidden(
    core: Any,
    batch: SequenceBatch,
    features: list[torch.Tensor] | None,
    packed: Packed | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Scored]:
    """(last-layer hidden states [S', L', H], input ids [S', L'], where the scored tokens are):
    one forward of the language model; `scored.source` indexes the positions that predict the
    completion tokens (the last prompt token through the second-to-last completion token)."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if packed is None:
        ids, units, extra = batch.input_ids, batch.units, batch.extra
        kwargs: dict[str, Any] = {"attention_mask": batch.attention_mask}
        scored = unpacked_scored(batch.completion_mask)
    else:
        ids, units = packed.input_ids, [batch.units[s] for s in packed.prompt_sequence]
        extra = {k: v[packed.gather] for k, v in batch.extra.items()}
        kwargs = {"attention_mask": packed.attention_mask, "position_ids": packed.position_ids}
        scored = packed.scored
    kwargs.update(input_ids=ids, **extra)
    if batch.vision:
        if features:  # each unit's features, handed to every sequence that shows it
            shown = [u for row_units in units for u in row_units]  # row by row, in order
            kwargs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(
                pooler_output=tuple(features[u] for u in shown))}  # fmt: skip
            if "image_grid_thw" in batch.vision:  # M-RoPE positions follow each image's grid
                kwargs["image_grid_thw"] = batch.vision["image_grid_thw"][shown]
            if "image_sizes" in batch.vision:
                kwargs["image_sizes"] = batch.vision["image_sizes"][shown]
        else:  # per-prompt layout without per-prompt features: each row gets its pixels
            assert batch.layout == "prompt", "the image layout needs the units' features"
            index = torch.tensor([row_units[0] for row_units in units])
            kwargs.update({k: v[index.to(v.device)] for k, v in batch.vision.items()})
    hidden = core.model(**kwargs, use_cache=False).last_hidden_state
    return hidden, ids, scored


def sequence_logps(
    core: Any,
    batch: SequenceBatch,
    features: list[torch.Tensor] | None,
    packed: Packed | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of completion-token log-probs [S], completion tokens [S]); with `packed`, the
    model runs on the packed rows (`packing.pack`) and the same scores come out per sequence."""
    hidden, ids, scored = completion_hidden(core, batch, features, packed)
    return completion_logps(core, hidden, ids, scored, batch.input_ids.shape[0])


def completion_logps(core: Any, hidden: torch.Tensor, ids: torch.Tensor, scored: Scored,
                     n: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(sum of completion-token log-probs [n], completion tokens [n]) from `completion_hidden`."""
    # Only the completion tokens are scored, each from the position that predicts it, so the
    # language model head never runs over the whole sequence.
    h = hidden[scored.row, scored.source]
    targets = ids[scored.row, scored.target]
    logits = core.get_output_embeddings()(h).float()
    token_logps = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)
    sums = torch.zeros(n, device=hidden.device, dtype=token_logps.dtype)
    sums = sums.index_add(0, scored.sequence, token_logps)
    counts = torch.bincount(scored.sequence, minlength=n)
    return sums, counts


def pack_batch(core: Any, batch: SequenceBatch) -> Packed | None:
    """`batch` packed by shared prompt (`packing.pack`) when `core` supports it and packing
    saves tokens; None otherwise (score one sequence per row)."""
    keys = [key[:2] for key in batch.sequence_keys]  # (row, variant): one prompt each
    if len(keys) != batch.input_ids.shape[0] or len(set(keys)) == len(keys):
        return None
    if not supports_packing(core):
        return None
    eager = text_attention(core) == "eager"
    return pack(batch.input_ids, batch.attention_mask, batch.completion_mask, keys,
                pad_id=batch.pad_id, dtype=core.dtype if eager else None)  # fmt: skip


class VLMPairScorer:
    """Policy (and reference) scores of every pair in a batch.

    `reference`: "adapters" (the policy with its LoRA disabled), "copy" (a frozen copy made
    here, for full fine-tuning), "precomputed" (scores looked up in `reference_scores`, a
    dict from (row, variant, completion) to a float, filled by one cached pass), or "none".
    `pack`: run the completions that share a prompt in one row (`packing.py`) where the model
    supports it; the scores are the same, the prompt is computed once.
    """

    def __init__(self, model: Any, reference: Reference = "adapters",
                 reference_scores: dict | None = None, *, pack: bool = True):  # fmt: skip
        self.reference = reference
        self.pack = pack
        self.reference_model = None
        if reference == "copy":
            self.reference_model = copy.deepcopy(_core(model)).eval().requires_grad_(False)
        if reference == "adapters" and not hasattr(getattr(model, "module", model),
                                                   "disable_adapter"):  # fmt: skip
            raise ValueError("reference 'adapters' needs a PEFT model; use 'copy' or LoRA")
        self.reference_scores = reference_scores
        # per model (by identity): its adapter layers, and whether its image path trains;
        # both are fixed for a run and cost a walk over every module to find out
        self._adapters = AdapterSwitch()
        self._frozen: dict[int, bool] = {}

    @contextlib.contextmanager
    def _reference(self, model: Any):
        # in eval mode: the loop scores in train mode (train/loop.py), and the policy with its
        # LoRA off would sample dropout (a reference that differs on every call)
        if self.reference == "adapters":
            with self._adapters.off(model), evaluating(_core(model)):
                yield _core(model)
        else:
            with evaluating(self.reference_model):
                yield self.reference_model

    def reference_logps(self, model: Any, batch: SequenceBatch,
                        features: list[torch.Tensor] | None = None,
                        packed: Packed | None = None) -> torch.Tensor:  # fmt: skip
        with torch.no_grad(), self._reference(model) as ref:
            if features is None:
                features = image_features(ref, batch)
            return sequence_logps(ref, batch, features, packed)[0]

    def packed(self, model: Any, batch: SequenceBatch) -> Packed | None:
        """The batch's packed rows (shared by the policy and reference passes), or None."""
        return pack_batch(_core(model), batch) if self.pack else None

    def __call__(self, model: Any, batch: SequenceBatch, *,
                 with_reference: bool) -> dict[str, PairScores]:  # fmt: skip
        core = _core(model)
        if id(core) not in self._frozen:
            self._frozen[id(core)] = not image_path_trainable(core)
        frozen = self._frozen[id(core)]
        features = None
        if frozen:
            with torch.no_grad():
                features = image_features(core, batch)
        packed = self.packed(model, batch)

        def policy() -> tuple[torch.Tensor, torch.Tensor]:
            shown = features
            if not frozen:  # the image path trains
                shown = image_features(core, batch)
            return sequence_logps(core, batch, shown, packed)

        logps, counts = as_forward(model, policy)
        ref = None
        if with_reference:
            if self.reference == "none":
                raise ValueError("the objective needs a reference but the scorer has none")
            if self.reference == "precomputed":
                ref = self._lookup(batch, logps.device)
            else:
                ref = self.reference_logps(model, batch, features if frozen else None, packed)
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
