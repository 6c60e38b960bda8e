"""Diffusion pair images review 2: the pixels a pair trains on from images of every mode.
A 16-bit greyscale PNG (PIL mode I;16, or I) was clipped to 8 bits by `convert("RGB")`:
every value above 255 turned white, so such an image trained as a blank white square."""

from __future__ import annotations

import io

import numpy as np
import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mmalign.diffusion.data import PairImages, crop_and_resize


def _png16(value: int, size: int = 16) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((size, size), value, dtype=np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def torch_close(pixels, value: float) -> bool:
    return bool((pixels - value).abs().max() < 1e-4)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_greyscale_is_scaled_not_clipped(mode):
    image = PILImage.open(io.BytesIO(_png16(32896)))  # 32896 / 257 = 128: mid grey
    image = image if image.mode == mode else image.convert(mode)
    pixels, _, _ = crop_and_resize(image, 8)
    assert pixels.shape == (3, 8, 8)
    assert torch_close(pixels, 128 / 127.5 - 1)


def test_a_pair_of_16_bit_images_trains_on_their_pixels():
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    row = {"prompt": "p", "chosen": {"bytes": _png16(65535), "path": None},
           "rejected": {"bytes": _png16(0), "path": None}}  # fmt: skip
    item = PairImages(Dataset.from_list([row], features=features), 8)[0]
    assert torch_close(item["pixels"][0], 1.0) and torch_close(item["pixels"][1], -1.0)
    row["chosen"] = {"bytes": _png16(257 * 64), "path": None}
    item = PairImages(Dataset.from_list([row], features=features), 8)[0]
    assert torch_close(item["pixels"][0], 64 / 127.5 - 1)  # was 1.0: clipped to white


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA"])
def test_8_bit_modes_are_what_convert_rgb_gives(mode):
    rgb = PILImage.new("RGB", (12, 10), (10, 120, 240))
    image = rgb.convert(mode)
    pixels, original, crop = crop_and_resize(image, 8)
    assert (original, crop) == ((10, 12), (0, 0))  # resized to 9 x 8, round(0.5) = 0
    expected = np.asarray(image.convert("RGB").resize((9, 8), PILImage.Resampling.BILINEAR))
    expected = expected[:, 0:8]
    assert np.allclose(pixels.permute(1, 2, 0).numpy(), expected / 127.5 - 1, atol=1e-6)


def test_the_pickapic_writer_keeps_16_bit_greyscale_grey(tmp_path):
    from mmalign.data.pickapic import load_pickapic, write_pickapic

    grey = PILImage.open(io.BytesIO(_png16(257 * 64)))
    black = PILImage.new("RGB", (16, 16))
    write_pickapic([{"prompt": "p", "chosen": grey, "rejected": black}], tmp_path / "pp", "train")
    pairs, _ = load_pickapic(tmp_path / "pp", "train", cache_dir=tmp_path / "c")
    assert abs(float(np.asarray(pairs[0]["chosen"].convert("L"), dtype=float).mean()) - 64) < 3


def test_8_bit_values_in_mode_i_and_unit_floats_keep_their_grey():
    eight = PILImage.new("L", (16, 16), 200).convert("I")  # mode I holding 0-255
    assert torch_close(crop_and_resize(eight, 8)[0], 200 / 127.5 - 1)
    unit = PILImage.fromarray(np.full((16, 16), 0.25, dtype=np.float32))  # mode F in [0, 1]
    assert unit.mode == "F"
    assert torch_close(crop_and_resize(unit, 8)[0], round(0.25 * 255) / 127.5 - 1)
    with pytest.raises(ValueError, match=r"mode-F image is read as floats in \[0, 1\]"):
        crop_and_resize(PILImage.fromarray(np.full((4, 4), 3.0, dtype=np.float32)), 8)


def test_an_unreadable_mode_names_its_row_and_side():
    buffer = io.BytesIO()
    PILImage.fromarray(np.full((8, 8), 7.5, dtype=np.float32)).save(buffer, format="TIFF")
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    ok = {"bytes": _png16(0), "path": None}
    rows = [
        {"prompt": "p", "chosen": ok, "rejected": ok},
        {"prompt": "q", "chosen": ok, "rejected": {"bytes": buffer.getvalue(), "path": None}},
    ]
    images = PairImages(Dataset.from_list(rows, features=features), 8)
    assert images[0]["pixels"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"row 1, rejected image: a mode-F image"):
        images[1]
