"""CLIP score (Hessel et al. 2021, "CLIPScore"): 100 * cos(text, image) under an OpenCLIP
backbone, the scale torchmetrics' CLIPScore uses (without its clamp at 0: a negative cosine
stays visible). The backbone and its weights are part of the scorer's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .common import ScorerOptions
from .openclip import OpenClipScorer

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

DEFAULT = "ViT-L-14:openai"


class ClipScore(OpenClipScorer):
    """`clip[:<arch>[:<pretrained>]]`, e.g. `clip:ViT-B-32:laion2b_s34b_b79k` (default
    `ViT-L-14:openai`); `path` (a local checkpoint file) replaces the pretrained tag."""

    def __init__(
        self,
        backbone: str = DEFAULT,
        *,
        path: str | Path | None = None,
        **options: Unpack[ScorerOptions],
    ) -> None:
        super().__init__(**options)
        arch, _, tag = backbone.partition(":")
        if not tag and path is None:
            tag = "openai"
        pretrained = path if path is not None else tag
        self.name = f"clip:{Path(arch).stem}:{tag or Path(str(path)).name}"
        # a local file named with a tag (`clip:ViT-L-14:openai`, path=) is built as that tag's
        # weights need (QuickGELU for openai)
        self._load(arch, pretrained, tag or None)

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return 100 * self._cosine(pixels, prompts)
