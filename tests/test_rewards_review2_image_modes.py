"""PIL images of every mode are read at their own bit depth before scoring.

`as_image_batch` turned each PIL image into RGB with `img.convert("RGB")`. For a 16-bit
grayscale image (a 16-bit PNG or TIFF opens as mode "I;16"; older Pillow and `fromarray` of
int32 give "I") that conversion clips every value to 0-255 of 65535: a mid-grey gradient came
out as a white image (mean 0.998 instead of 0.5) and was scored as such without a word. A
float ("F") image in [0, 1] came out black.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.base import as_image_batch


def _gradient(size: int = 40) -> np.ndarray:
    """A 16-bit grayscale ramp over the whole range, [size, size + 8]."""
    return np.linspace(0, 65535, size * (size + 8)).reshape(size, size + 8).astype(np.uint16)


def _eight_bit(a16: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(a16 / 257).astype(np.uint8)).convert("RGB")


def test_a_16_bit_png_is_read_at_16_bits(tmp_path):
    a16 = _gradient()
    Image.fromarray(a16).save(tmp_path / "g16.png")
    opened = Image.open(tmp_path / "g16.png")
    assert opened.mode == "I;16"
    got = as_image_batch([opened])
    assert got.shape == (1, 3, 40, 48)
    assert abs(float(got.mean()) - 0.5) < 0.01  # was 0.998: clipped to white
    want = as_image_batch([_eight_bit(a16)])
    torch.testing.assert_close(got, want, atol=1 / 255, rtol=0)


def test_int32_and_float_grayscale_are_scaled_too():
    a16 = _gradient()
    want = as_image_batch([_eight_bit(a16)])
    as_int = Image.fromarray(a16.astype(np.int32))
    assert as_int.mode == "I"
    torch.testing.assert_close(as_image_batch([as_int]), want, atol=1 / 255, rtol=0)
    as_float = Image.fromarray((a16 / 65535).astype(np.float32))
    assert as_float.mode == "F"
    torch.testing.assert_close(as_image_batch([as_float]), want, atol=1 / 255, rtol=0)


def test_an_int32_image_of_8_bit_values_stays_8_bit():
    grey = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    want = as_image_batch([Image.fromarray(grey)])
    as_int = Image.fromarray(grey).convert("I")
    assert as_int.mode == "I"
    torch.testing.assert_close(as_image_batch([as_int]), want)


def test_values_outside_the_modes_range_are_refused():
    with pytest.raises(ValueError, match="16-bit"):
        as_image_batch([Image.fromarray(np.full((4, 4), 70000, dtype=np.int32))])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_image_batch([Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32))])


def test_8_bit_modes_are_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    want = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(as_image_batch([Image.fromarray(rgb)]), want)
    grey = Image.fromarray(rgb[..., 0])
    torch.testing.assert_close(as_image_batch([grey]), want[:, :1].expand(-1, 3, -1, -1))
    rgba = Image.fromarray(np.dstack([rgb, np.full((8, 8), 255, np.uint8)]))
    torch.testing.assert_close(as_image_batch([rgba]), want)  # opaque: transparency is review 4's


def test_a_scorer_scores_a_16_bit_image_as_its_8_bit_copy(tmp_path):
    weights, config = tiny.save_openclip(tmp_path, seed=1)
    scorer = get_scorer(f"clip:{config}", path=weights)
    a16 = _gradient()
    prompts = ["a white square", "a white square"]
    got = scorer.score([Image.fromarray(a16), _eight_bit(a16)], prompts)
    white = scorer.score([Image.new("RGB", (48, 40), (255, 255, 255))], prompts[:1])
    assert abs(float(got[0] - got[1])) < 0.05 * abs(float(got[1] - white[0]))
