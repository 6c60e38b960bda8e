"""CLIP score (Hessel et al. 2021, "CLIPScore"): 100 * cos(text, image) under an OpenCLIP
backbone, the scale torchmetrics' CLIPScore uses (without its clamp at 0: a negative cosine
stays visible). The backbone and its weights are part of the scorer's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .common import BatchedScorer
from .openclip import create

DEFAULT = "ViT-L-14:openai"


class ClipScore(BatchedScorer):
    """`clip[:<arch>[:<pretrained>]]`, e.g. `clip:ViT-B-32:laion2b_s34b_b79k` (default
    `ViT-L-14:openai`); `path` (a local checkpoint file) replaces the pretrained tag."""

    def __init__(
        self,
        backbone: str = DEFAULT,
        *,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__(device, dtype, batch_size)
        arch, _, tag = backbone.partition(":")
        if not tag and path is None:
            tag = "openai"
        pretrained = path if path is not None else tag
        self.name = f"clip:{Path(arch).stem}:{tag or Path(str(path)).name}"
        self.model, self.tokenizer, self.size, self.mean, self.std = create(
            arch, pretrained=pretrained, device=self.device, dtype=self.dtype
        )

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(pixels), dim=-1)
        text = F.normalize(
            self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)), dim=-1
        )
        return 100 * (image * text).sum(-1)
