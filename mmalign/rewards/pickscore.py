"""PickScore (Kirstain et al. 2023, "Pick-a-Pic"): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic.

score = logit_scale.exp() * cos(text, image), as in the PickScore repository's inference
example (about 20-23 on real images; METHODS.md section 4). Some code reports the raw cosine
(about 0.22): this scorer does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..hub import Need, hub_errors, require
from .common import BatchedScorer, ScorerOptions, scorer_key

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

MODEL = "yuvalkirstain/PickScore_v1"
PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_TOKENS = 77  # CLIP's context, start and end tokens included (the reference's max_length)


def _embeds(output) -> torch.Tensor:
    """transformers >= 5 returns a model output from get_*_features, older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _crop_size(crop) -> int:
    """The processor's crop height: an int, a dict, or transformers 5's SizeDict."""
    if isinstance(crop, int):
        return crop
    for key in ("height", "shortest_edge"):
        value = crop.get(key) if isinstance(crop, dict) else getattr(crop, key, None)
        if value:
            return int(value)
    raise ValueError(f"cannot read a crop size from the PickScore processor: {crop!r}")


class PickScore(BatchedScorer):
    """`pickscore`: `path` is the model (folder or hub id), `processor` its processor
    (default: the processor PickScore was trained with, a different repository)."""

    centre = "floor"  # transformers' center_crop: `excess // 2`, not torchvision's rounding
    max_tokens = MAX_TOKENS

    def __init__(
        self,
        path: str | Path = MODEL,
        *,
        processor: str | Path | None = None,
        **options: Unpack[ScorerOptions],
    ) -> None:
        from transformers import AutoProcessor, CLIPModel

        super().__init__(**options)
        self.name = "pickscore"
        processor = str(processor or PROCESSOR)
        key = scorer_key("pickscore")
        require(
            [
                Need(str(path), key, file="config.json"),
                Need(processor, "pickscore processor=", file="preprocessor_config.json"),
            ]
        )
        with hub_errors(path, key):
            model = CLIPModel.from_pretrained(str(path), dtype=self.dtype)
        self.model = model.to(self.device).eval()
        with hub_errors(processor, "pickscore processor="):
            self.processor = AutoProcessor.from_pretrained(processor)
        ip = self.processor.image_processor
        self.size = _crop_size(ip.crop_size)
        self.mean, self.std = tuple(ip.image_mean), tuple(ip.image_std)

    def _too_long(self, prompts: list[str]) -> list[str]:
        ids = self.processor.tokenizer(prompts, truncation=True, max_length=MAX_TOKENS + 1)
        lengths = [len(row) for row in ids["input_ids"]]
        return [p for p, n in zip(prompts, lengths, strict=True) if n > MAX_TOKENS]

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        text = self.processor.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(self.device)  # fmt: skip
        image_emb = F.normalize(_embeds(self.model.get_image_features(pixel_values=pixels)), dim=-1)
        text_emb = F.normalize(_embeds(self.model.get_text_features(**text)), dim=-1)
        return self.model.logit_scale.exp() * (image_emb * text_emb).sum(-1)
