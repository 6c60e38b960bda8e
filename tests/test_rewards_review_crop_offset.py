"""The centre crop starts where each scorer's reference pipeline starts it.

When the resized image is longer than the crop by an odd number of pixels, torchvision's
`CenterCrop` (open_clip's `preprocess_val` for CLIP score and the aesthetic backbone,
ImageReward's `_transform`) starts at `int(round(excess / 2))` and transformers'
CLIPImageProcessor (PickScore) at `excess // 2`. `clip_pixels` always floored, so with an
excess of 3, 7, 11, ... px the open_clip and ImageReward scorers saw the image shifted by one
pixel against their reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.common import CLIP_MEAN, CLIP_STD, clip_pixels

open_clip = pytest.importorskip("open_clip")
PROMPTS = ["a red circle on a blue background", "a cat"]


def _pil(height: int, width: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


# 32 px high: no resize, so the crop alone decides; excesses 3 and 7 are where the two differ
@pytest.mark.parametrize("width", [33, 35, 36, 39])
def test_round_centre_matches_open_clip_preprocess_val(width):
    image = _pil(32, width)
    want = open_clip.image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)(image)
    torch.testing.assert_close(clip_pixels(_tensor(image), 32, centre="round")[0], want)


def test_clip_scorer_scores_the_crop_open_clip_scores(tmp_path):
    weights, config = tiny.save_openclip(tmp_path, seed=4)
    scorer = get_scorer(f"clip:{config}", path=weights)
    images = [_pil(35, 32, seed=1), _pil(35, 32, seed=2)]  # 3 px too tall
    preprocess = open_clip.image_transform(32, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    with torch.no_grad():
        pixels = torch.stack([preprocess(im) for im in images])
        image = F.normalize(scorer.model.encode_image(pixels), dim=-1)
        text = F.normalize(scorer.model.encode_text(scorer.tokenizer(PROMPTS)), dim=-1)
    torch.testing.assert_close(scorer.score(images, PROMPTS), 100 * (image * text).sum(-1))


def test_pickscore_keeps_the_transformers_processor_floor(tmp_path):
    model_dir, processor_dir = tiny.save_pickscore(tmp_path)
    scorer = get_scorer("pickscore", path=model_dir, processor=processor_dir)
    image = _pil(32, 35)
    want = scorer.processor.image_processor(image, return_tensors="pt").pixel_values
    got = scorer._pixels([image])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_scorers_on_torchvision_transforms_round_and_hpsv2_pads():
    from mmalign.rewards.aesthetic import Aesthetic
    from mmalign.rewards.clip import ClipScore
    from mmalign.rewards.hpsv2 import HPSv2
    from mmalign.rewards.imagereward import ImageRewardScorer
    from mmalign.rewards.pickscore import PickScore

    # ImageReward's `_transform` is torchvision's Resize + CenterCrop, as open_clip's
    assert {c.centre for c in (Aesthetic, ClipScore, ImageRewardScorer)} == {"round"}
    assert PickScore.centre == "floor" and HPSv2.fit == "pad"


def test_no_images_give_no_scores(tmp_path) -> None:
    """An empty batch scores to an empty tensor, not a bare torch.cat error."""
    weights, config = tiny.save_openclip(tmp_path / "clip")
    scorer = get_scorer(f"clip:{config}", path=weights)
    for empty in ([], torch.empty(0, 3, 32, 32)):
        s = scorer.score(empty, [])
        assert s.shape == (0,) and s.dtype == torch.float32
