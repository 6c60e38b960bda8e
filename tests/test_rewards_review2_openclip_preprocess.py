"""CLIP score preprocesses each OpenCLIP backbone as open_clip's `preprocess_val` for it does.

`clip:<arch>:<tag>` took the mean and std from the model's preprocess config but always resized
the shorter side bicubically and centre-cropped. Backbones whose tag says otherwise were fed
other pixels than open_clip feeds them: SigLIP's and DFN's tags (`resize_mode="squash"`: the
whole image resized to a square, nothing cropped), MobileCLIP's (`interpolation="bilinear"`).
And a local file named with its tag (`clip:<arch>:<tag>`, path=) lost the tag's mean and std
too (open_clip merges a tag's preprocessing only when it downloads the tag). Offline, tiny
model tags carry those settings as the real ones do.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import get_scorer, tiny

open_clip = pytest.importorskip("open_clip")
PROMPTS = ["a red circle on a blue background", "a cat", "a green square"]
SIGLIP_LIKE = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize_mode": "squash"}


@pytest.fixture
def tags(tmp_path, monkeypatch):
    """(weights file, model config JSON) with tags `squash` (SigLIP's settings), `bilinear`
    (MobileCLIP's interpolation) and `plain` (open_clip's defaults) for the same file."""
    from open_clip import pretrained

    weights, config = tiny.save_openclip(tmp_path, seed=6)
    open_clip.add_model_config(config)
    file = str(weights)
    registered = {
        "squash": pretrained._pcfg(file=file, interpolation="bicubic", **SIGLIP_LIKE),
        "bilinear": pretrained._pcfg(file=file, interpolation="bilinear"),
        "plain": pretrained._pcfg(file=file),
        "longest": pretrained._pcfg(file=file, resize_mode="longest"),
    }
    monkeypatch.setitem(pretrained._PRETRAINED, config.stem, registered)
    return weights, config


def _open_clip_scores(config, tag: str, images: torch.Tensor) -> torch.Tensor:
    """100 * cos as open_clip computes it with the tag's own `preprocess_val`, on tensors:
    torchvision resizes them with the same antialiased kernels as F.interpolate; clamped after
    the resize as a PIL image's 8-bit pixels are."""
    from torchvision.transforms import Resize

    model, _, preprocess = open_clip.create_model_and_transforms(config.stem, pretrained=tag)
    tokenizer = open_clip.get_tokenizer(config.stem)

    def pixels_of(image: torch.Tensor) -> torch.Tensor:
        for step in preprocess.transforms:
            image = step(image).clamp(0, 1) if isinstance(step, Resize) else step(image)
        return image

    with torch.no_grad():
        pixels = torch.stack([pixels_of(im) for im in images])
        image = F.normalize(model.eval().encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokenizer(PROMPTS)), dim=-1)
    return 100 * (image * text).sum(-1)


@pytest.mark.parametrize("tag", ["squash", "bilinear", "plain"])
def test_clip_score_uses_the_tags_preprocessing(tags, tag):
    weights, config = tags
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(0))  # not square
    want = _open_clip_scores(config, tag, x)
    by_tag = get_scorer(f"clip:{config}:{tag}")
    by_file = get_scorer(f"clip:{config}:{tag}", path=weights)  # a local file of the tag
    for scorer in (by_tag, by_file):
        torch.testing.assert_close(scorer.score(x, PROMPTS), want, atol=1e-4, rtol=0)


def test_the_squash_differs_from_the_crop(tags):
    """The check above can fail: cropping the tiny model's input changes its scores."""
    _, config = tags
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    squash, crop = _open_clip_scores(config, "squash", x), _open_clip_scores(config, "plain", x)
    assert (squash - crop).abs().max() > 0.05


def test_an_unsupported_resize_mode_is_refused_not_cropped(tags):
    _, config = tags
    with pytest.raises(ValueError, match="resize_mode='longest'"):
        get_scorer(f"clip:{config}:longest")


def test_hpsv2_keeps_its_own_padding(tmp_path):
    folder, config = tiny.save_hpsv2(tmp_path)
    scorer = get_scorer("hpsv2", path=folder, arch=config)
    assert scorer.fit == "pad" and scorer.interpolation == "bicubic"
