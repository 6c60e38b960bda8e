"""CLIP preprocessing on tensors resizes the long side as the reference pipelines do.

`clip_pixels` rounded the long side (`round(long * size / short)`) where transformers'
CLIPImageProcessor (PickScore) and torchvision's `Resize` (open_clip: HPSv2, CLIP score,
aesthetic; ImageReward) truncate it (`int(size * long / short)`): a 640 x 480 image became
224 x 299 instead of 224 x 298, so every pixel of the centre crop was sampled from a slightly
different place and its scores differed from the real scorer's.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from mmalign.rewards.common import CLIP_MEAN, CLIP_STD, clip_pixels


def _reference(images: torch.Tensor, size: int) -> torch.Tensor:
    """open_clip's `preprocess_val` geometry on a tensor: Resize(size), CenterCrop(size)."""
    x = TF.resize(images, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x.clamp(0, 1), [size, size])
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


# (H, W) where the rounded and the truncated long side differ; crop offsets are whole numbers
@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (301, 300), (300, 301)])
def test_long_side_is_truncated_as_the_reference_resize_does(shape):
    g = torch.Generator().manual_seed(0)
    small = torch.rand(2, 3, shape[0] // 10, shape[1] // 10, generator=g)
    images = torch.nn.functional.interpolate(small, size=shape, mode="bilinear")
    ours = clip_pixels(images, 224)
    assert ours.shape == (2, 3, 224, 224)
    torch.testing.assert_close(ours, _reference(images, 224), atol=1e-4, rtol=0)


def test_square_images_are_unchanged():
    images = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(clip_pixels(images, 224), _reference(images, 224), atol=1e-4, rtol=0)
