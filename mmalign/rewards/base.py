"""The `Scorer` interface every reward model implements, and image-batch conversion."""

from __future__ import annotations

import math
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


# Float rounding a [0, 1] image may carry (half an 8-bit step): clamped, not refused.
ROUNDING = 0.5 / 255


def _unit_range(images: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 1] (within `ROUNDING`, then clamped); any other value is refused.

    No value-based guess can tell every [-1, 1] batch from a [0, 1] one, so none is made: a
    negative value beyond rounding means the batch is not in [0, 1] (a [-1, 1] one, or a
    resize's overshoot the caller should clamp) and is refused, never clamped to black. A
    [-1, 1] batch with no value below 0 (every pixel at least mid-grey) is the one case no
    rule can see; pass such tensors mapped with (x + 1) / 2, or as uint8."""
    if not images.numel():
        return images
    low, high = (float(v) for v in torch.aminmax(images))  # NaN anywhere: both NaN
    if math.isnan(low) or math.isnan(high):
        raise ValueError("float images hold NaN values (a half-precision VAE can overflow)")
    if low < -ROUNDING or high > 1 + ROUNDING:
        if low >= -1 - ROUNDING and high <= 1 + ROUNDING:
            hint = "they look like [-1, 1] (as a VAE decodes): map [-1, 1] with (x + 1) / 2"
        elif low >= -ROUNDING and high <= 255 + ROUNDING:
            hint = "they look like 0-255: pass uint8 for 0-255 pixels, or divide by 255"
        else:
            hint = "map them to [0, 1] first"
        raise ValueError(
            f"float images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]: {hint} "
            "(a resize's overshoot: clamp(0, 1) it)"
        )
    return images.clamp(0, 1)


def _pil_array(img: Image.Image) -> np.ndarray:
    """[H,W,3] float32 in [0,1] from a PIL image at its own bit depth: 16-bit and float
    greyscale through `data.schema.grey_unit` (`convert("RGB")` would clip them to a white or
    black image), other modes through `data.schema.to_rgb`, the one rule of every scorer and
    the data pipelines: transparency composited onto white (as PickScore's transformers
    processor does; open_clip's and ImageReward's `convert("RGB")` would score the colour
    stored under transparent pixels), palette and L expanded."""
    from ..data.schema import grey_unit, to_rgb

    grey = grey_unit(img)
    if grey is None:
        return np.asarray(to_rgb(img), dtype=np.float32) / 255
    return np.repeat(grey.astype(np.float32)[..., None], 3, axis=-1)
