"""Review 4: images with transparency are composited onto white before scoring, by every scorer.

`as_image_batch` turned a PIL image into RGB with `convert("RGB")`, which drops the alpha
channel: the colour stored under fully transparent pixels (often black, or leftovers) was
scored as if visible. transformers 5's CLIP processor, the one PickScore was trained with,
composites transparency onto white, as `data.schema.to_rgb` now does for every mmalign image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.data.schema import to_rgb
from mmalign.rewards import as_image_batch, get_scorer, tiny

PROMPTS = ["a red circle on a white background", "a cat"]


def _rgba(height: int = 40, width: int = 48, seed: int = 0) -> Image.Image:
    """Random colours; the left half fully transparent, the rest at random partial alpha."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
    alpha[:, : width // 2] = 0
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


def _on_white(image: Image.Image) -> Image.Image:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


def test_rgba_la_and_transparent_palette_images_are_composited_onto_white():
    rgba = _rgba()
    want = as_image_batch([_on_white(rgba)])
    assert float(want[..., :24].min()) == 1.0  # the transparent half is white
    torch.testing.assert_close(as_image_batch([rgba]), want)
    la = rgba.convert("LA")
    torch.testing.assert_close(as_image_batch([la]), as_image_batch([_on_white(la)]))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.info["transparency"] = 0  # index 0 (black) is transparent
    got = as_image_batch([palette])
    assert float(got[0, :, 4, 4].min()) == 1.0  # white, not the palette's black
    torch.testing.assert_close(got[0, :, 0, 0], torch.tensor([200, 10, 10]) / 255)
    # one rule: the data pipeline's `to_rgb` gives the same pixels
    assert np.array_equal(np.asarray(to_rgb(rgba)), np.asarray(_on_white(rgba)))


def test_opaque_images_are_unchanged():
    rgba = _rgba()
    opaque = rgba.copy()
    opaque.putalpha(255)
    torch.testing.assert_close(as_image_batch([opaque]), as_image_batch([rgba.convert("RGB")]))


def test_pickscore_scores_rgba_as_its_white_composite(tmp_path):
    model_dir, processor_dir = tiny.save_pickscore(tmp_path)
    scorer = get_scorer("pickscore", path=model_dir, processor=processor_dir)
    images = [_rgba(seed=1), _rgba(seed=2)]
    got = scorer.score(images, PROMPTS)
    torch.testing.assert_close(got, scorer.score([_on_white(im) for im in images], PROMPTS))
    dropped = scorer.score([im.convert("RGB") for im in images], PROMPTS)
    assert not torch.allclose(got, dropped)  # the test can tell the two rules apart
    # and the pixels are those PickScore's own (transformers) processor makes (32 px high:
    # no resize, whose interpolation differs between the two at the 1e-1 level on noise)
    crops = [_rgba(32, 36, seed=5), _rgba(32, 36, seed=6)]
    want = scorer.processor.image_processor(crops, return_tensors="pt").pixel_values
    torch.testing.assert_close(scorer._pixels(crops), want)
    dropped = scorer.processor.image_processor([im.convert("RGB") for im in crops],
                                               return_tensors="pt").pixel_values  # fmt: skip
    assert not torch.allclose(want, dropped)


def test_an_open_clip_scorer_follows_the_same_rule(tmp_path):
    pytest.importorskip("open_clip")
    weights, config = tiny.save_openclip(tmp_path, seed=3)
    scorer = get_scorer(f"clip:{config}", path=weights)
    images = [_rgba(32, 32, seed=3), _rgba(32, 32, seed=4)]
    torch.testing.assert_close(
        scorer.score(images, PROMPTS), scorer.score([_on_white(im) for im in images], PROMPTS)
    )


def test_the_label_app_shows_transparency_as_training_reads_it(tmp_path):
    """Annotators vote on the pixels that train: transparent black shows as white."""
    from mmalign_label.images import load_image

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4, :, 3] = 255  # top half opaque black, bottom half transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    shown = np.asarray(load_image(tmp_path, "a.png"))
    assert shown[0, 0].tolist() == [0, 0, 0] and shown[7, 0].tolist() == [255, 255, 255]
