"""HPSv2 preprocesses as HPSv2 does: longer side to 224, padded with black to a square.

HPSv2 scores with `preprocess_val` from its `create_model_and_transforms(...,
light_augmentation=True)`, i.e. `image_transform(size, is_train=False, resize_longest_max=True)`:
ToTensor, `ResizeMaxSize(size, fill=0)` (bicubic resize of the longer side, each side rounded,
then centred zero padding), Normalize. The scorer used CLIP's shorter-side resize and centre
crop, so a non-square image lost its sides and scored differently (by 0.03 in cosine on the tiny
model, about the size of a typical HPSv2 gap between two models).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.common import CLIP_MEAN, CLIP_STD, pad_pixels

PROMPTS = ["a red circle on a blue background", "a green square"]


def _resize_max_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """HPSv2's `ResizeMaxSize.forward` then `Normalize`, on one [3,H,W] tensor in [0,1]."""
    height, width = image.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_size = [round(dim * scale) for dim in (height, width)]
        image = TF.resize(image, new_size, InterpolationMode.BICUBIC)
        pad_h, pad_w = size - new_size[0], size - new_size[1]
        padding = [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2]
        image = TF.pad(image, padding=padding, fill=0)
    return TF.normalize(image, CLIP_MEAN, CLIP_STD)


@pytest.mark.parametrize("shape", [(40, 48), (48, 40), (33, 70), (64, 64), (20, 20)])
def test_pad_pixels_matches_resize_max_size(shape):
    x = torch.rand(2, 3, *shape, generator=torch.Generator().manual_seed(0))
    want = torch.stack([_resize_max_size(im, 32) for im in x])
    torch.testing.assert_close(pad_pixels(x, 32), want, atol=1e-5, rtol=0)


def test_hpsv2_scores_the_padded_whole_image(tmp_path):
    folder, config = tiny.save_hpsv2(tmp_path, seed=3)
    scorer = get_scorer("hpsv2", path=folder, arch=config)
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))  # not square
    with torch.no_grad():
        pixels = torch.stack([_resize_max_size(im, 32) for im in x])
        image = F.normalize(scorer.model.encode_image(pixels), dim=-1)
        text = F.normalize(scorer.model.encode_text(scorer.tokenizer(PROMPTS)), dim=-1)
    torch.testing.assert_close(scorer.score(x, PROMPTS), (image * text).sum(-1), atol=1e-5, rtol=0)


def test_other_openclip_scorers_still_centre_crop(tmp_path):
    """Only HPSv2 pads: CLIP score (and aesthetic) keep open_clip's Resize + CenterCrop."""
    weights, config = tiny.save_openclip(tmp_path, seed=4)
    assert get_scorer(f"clip:{config}", path=weights).fit == "crop"
