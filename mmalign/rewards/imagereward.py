"""ImageReward (Xu et al. 2023): a BLIP ViT-L image-text encoder with an MLP head, trained on
ImageRewardDB; checkpoint `THUDM/ImageReward` ("ImageReward-v1.0"). Needs the optional
`image-reward` package, whose loader builds BLIP. The batched forward follows the package's
`ImageReward.score`: BLIP text encoder cross-attending to the image, [CLS] feature -> MLP,
z-normalised with mean 0.16717 and std 1.03334 (METHODS.md section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .common import CLIP_MEAN, CLIP_STD, BatchedScorer

MEAN, STD = 0.16717, 1.03334
SIZE = 224  # BLIP's input size in ImageReward


def _package():
    try:
        import ImageReward
    except ImportError as err:
        raise ImportError(
            "the imagereward scorer needs the optional ImageReward package: "
            "pip install image-reward (extra `imagereward`: pip install 'mmalign[imagereward]')"
        ) from err
    return ImageReward


class ImageRewardScorer(BatchedScorer):
    """`imagereward`: `path` is "ImageReward-v1.0" (downloaded by the package) or a local
    checkpoint file; `med_config` the BLIP config JSON the package needs for a local file."""

    def __init__(
        self,
        *,
        path: str | Path = "ImageReward-v1.0",
        med_config: str | Path | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 32,
    ) -> None:
        package = _package()
        super().__init__(device, dtype, batch_size)
        self.name = "imagereward"
        self.size, self.mean, self.std = SIZE, CLIP_MEAN, CLIP_STD
        kwargs = {"med_config": str(med_config)} if med_config else {}
        self.model = package.load(str(path), device=str(self.device), **kwargs)
        self.model = self.model.to(self.device, self.dtype).eval()

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        blip = self.model.blip
        text = blip.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=35,
            return_tensors="pt",
        ).to(self.device)  # fmt: skip
        image_embeds = blip.visual_encoder(pixels)
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = blip.text_encoder(
            text.input_ids, attention_mask=text.attention_mask,
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts,
            return_dict=True,
        )  # fmt: skip
        reward = self.model.mlp(out.last_hidden_state[:, 0, :]).squeeze(-1)
        return (reward - MEAN) / STD
