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
from .files import ScorerFile
from .openclip import OpenClipScorer, tag_file

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

DEFAULT = "ViT-L-14:openai"


def files(
    backbone: str = DEFAULT, *, path: str | Path | None = None, **_options: object
) -> list[ScorerFile]:
    """The OpenCLIP weights `ClipScore(backbone, path=...)` loads: `path` (a local checkpoint
    file), else the hub repo of the backbone's pretrained tag (rewards/files.py)."""
    arch, _, tag = backbone.partition(":")
    scorer = "clip" if backbone == DEFAULT else f"clip:{backbone}"
    found = []
    if Path(arch).suffix == ".json":
        found.append(ScorerFile(scorer, "path", "OpenCLIP model config", arch, hub=False))
    if path is not None:
        return [*found, ScorerFile(scorer, "path", "checkpoint", str(path), hub=False, give="FILE")]
    weights = tag_file(scorer, "path", arch, tag or "openai", "FILE")
    return [*found, weights] if weights.source else found


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
