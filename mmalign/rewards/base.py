"""The `Scorer` interface every reward model implements, and image-batch conversion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image

# PIL is imported only by type checkers: a scorer that never sees PIL images need not load it.
ImageBatch = torch.Tensor | Sequence["Image.Image"]


@runtime_checkable
class Scorer(Protocol):
    """A reward model: `score(images, prompts)` -> [B] floats, higher is better.

    `images` is a float tensor [B,3,H,W] in [0,1] or a list of PIL images (see
    `as_image_batch`); `prompts` holds one caption per image.
    """

    name: str

    def score(self, images: ImageBatch, prompts: Sequence[str]) -> torch.Tensor: ...


def as_image_batch(images: ImageBatch) -> torch.Tensor:
    """A float tensor [B,3,H,W] in [0,1] from a tensor (float in [0,1] or uint8) or PIL images
    (each read at its bit depth: `_pil_array`)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.float() / 255
        return _unit_range(images.float())
    arrays = [_pil_array(img) for img in images]
    if not arrays:
        raise ValueError("no images to score")
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"images differ in size: {sorted({a.shape[:2] for a in arrays})}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    """Float pixels clamped to [0, 1], refused when they are in a whole other range."""
    if images.numel():
        low, high = torch.aminmax(images)
        # clamping absorbs a resize's overshoot; a whole other value range would be
        # clamped into white (0-255) or black (-1..1) images and scored without a word
        if high > 2 or low < -0.5:
            raise ValueError(
                f"float images must be in [0, 1], got values in [{float(low):.3g}, "
                f"{float(high):.3g}]: pass uint8 for 0-255 pixels, map [-1, 1] with (x + 1) / 2"
            )
    return images.clamp(0, 1)


def _pil_array(img: Image.Image) -> np.ndarray:
    """[H,W,3] float32 in [0,1] from a PIL image at its own bit depth: 16-bit and float
    greyscale through `data.schema.grey_unit` (`convert("RGB")` would clip them to a white or
    black image), other modes through `convert("RGB")`, as the reference preprocessors do
    (alpha dropped, palette and L expanded)."""
    from ..data.schema import grey_unit

    grey = grey_unit(img)
    if grey is None:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    return np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
