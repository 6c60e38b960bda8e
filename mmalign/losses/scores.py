"""The two data types every loss speaks: `PairScores` in, `LossOutput` out.

A score is a log-likelihood proxy (higher = more likely under the model):
the sum of completion-token log-probs for a VLM, `-mse` for a diffusion model.
A loss never knows which kind of model produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

SCORE_FIELDS = ("chosen", "rejected", "ref_chosen", "ref_rejected")
LENGTH_FIELDS = ("chosen_len", "rejected_len")


@dataclass
class PairScores:
    """Scores of one named pair per sample; every tensor has shape [B]."""

    chosen: Tensor
    rejected: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    chosen_len: Tensor | None = None  # completion tokens (LM); None means 1
    rejected_len: Tensor | None = None
    label: Tensor | None = None  # P(chosen is preferred) in [0, 1]; None means 1
    weight: Tensor | None = None  # per-pair weight, applied by the Objective

    @property
    def batch_size(self) -> int:
        return int(self.chosen.shape[0])

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and self.ref_rejected is not None

    def swapped(self) -> PairScores:
        """The same pairs, the same preferences, with chosen and rejected exchanged: the label
        becomes 1 - label, a missing label read as 1 (so the swap of an unlabelled pair has
        label 0, as the swap of the pair labelled 1 has)."""
        label = torch.ones_like(self.chosen) if self.label is None else self.label
        return replace(
            self,
            chosen=self.rejected,
            rejected=self.chosen,
            ref_chosen=self.ref_rejected,
            ref_rejected=self.ref_chosen,
            chosen_len=self.rejected_len,
            rejected_len=self.chosen_len,
            label=1 - label,
        )

    def validate(self, *, need_reference: bool = False, loss_name: str = "loss") -> None:
        """Raise `ValueError` naming the field when the scores cannot be used as they are.

        Nothing is broadcast: every given field must be a 1-D tensor with the
        batch shape of `chosen`.
        """
        if not isinstance(self.chosen, Tensor) or self.chosen.dim() != 1:
            raise ValueError(
                f"PairScores.chosen must be a 1-D tensor of shape [B], got {_describe(self.chosen)}"
            )
        shape = tuple(self.chosen.shape)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"PairScores.{f.name} must be a tensor of shape {list(shape)}, got "
                    f"{type(value).__name__}"
                )
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"PairScores.{f.name} has shape {list(value.shape)} but chosen has shape "
                    f"{list(shape)}; every field must hold one value per pair (nothing is "
                    "broadcast)"
                )
            if not torch.isfinite(value).all():
                bad = int((~torch.isfinite(value)).sum())
                raise ValueError(f"PairScores.{f.name} holds {bad} NaN or inf value(s)")
        if need_reference and not self.has_reference:
            missing = [n for n in ("ref_chosen", "ref_rejected") if getattr(self, n) is None]
            raise ValueError(
                f"loss '{loss_name}' needs reference scores but {', '.join(missing)} "
                "is None: score the pair with the reference model too, or choose a "
                "reference-free loss (simpo, cpo, orpo, sft, mapo)"
            )
        for name in LENGTH_FIELDS:
            value = getattr(self, name)
            if value is not None and bool((value <= 0).any()):
                raise ValueError(f"PairScores.{name} must be > 0 (token counts)")
        if self.label is not None and bool(((self.label < 0) | (self.label > 1)).any()):
            raise ValueError("PairScores.label must lie in [0, 1] (P(chosen is preferred))")
        if self.weight is not None and bool((self.weight < 0).any()):
            raise ValueError("PairScores.weight must be >= 0")


@dataclass
class LossOutput:
    """`loss`: the unweighted per-sample loss [B]. `metrics`: detached per-sample tensors [B]."""

    loss: Tensor
    metrics: dict[str, Tensor]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return type(value).__name__
