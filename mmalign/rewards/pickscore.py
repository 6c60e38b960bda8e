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

from ..hub import hub_errors
from .common import BatchedScorer, ScorerOptions
from .files import ScorerFile, require_files

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

MODEL = "yuvalkirstain/PickScore_v1"
PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_TOKENS = 77  # CLIP's context, start and end tokens included (the reference's max_length)
# a saved processor's config: transformers < 5 writes the first, transformers 5 the second
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def processor_source(path: str | Path, processor: str | Path | None) -> str:
    """The processor PickScore loads: `processor`; else the model's own folder where it holds
    a processor's files (one folder saved with both); else `PROCESSOR`, the one PickScore was
    trained with and its own example loads (a different repository from the model's)."""
    if processor is not None:
        return str(processor)
    folder = Path(str(path)).expanduser()
    if any((folder / name).is_file() for name in PROCESSOR_FILES):
        return str(path)
    return PROCESSOR


def files(
    path: str | Path = MODEL, *, processor: str | Path | None = None, **_options: object
) -> list[ScorerFile]:
    """The model and processor `PickScore(path, processor=...)` loads (rewards/files.py)."""
    return [
        ScorerFile("pickscore", "path", "model", str(path), in_folder=("config.json",),
                   hub_file="config.json"),
        ScorerFile("pickscore", "processor", "processor", processor_source(path, processor),
                   in_folder=PROCESSOR_FILES, hub_file=PROCESSOR_FILES[0],
                   note=", or save it into the model's folder"),
    ]  # fmt: skip


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
    (default: the model's folder where it holds one, else the processor PickScore was trained
    with, a different repository: `processor_source`)."""

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
        model_file, processor_file = files(path, processor=processor)
        require_files([model_file, processor_file])
        with hub_errors(path, model_file.key):
            model = CLIPModel.from_pretrained(str(path), dtype=self.dtype)
        self.model = model.to(self.device).eval()
        with hub_errors(processor_file.source, processor_file.key):
            self.processor = AutoProcessor.from_pretrained(processor_file.source)
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
