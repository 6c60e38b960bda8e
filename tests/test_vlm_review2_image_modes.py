"""A 16-bit greyscale image reaches a VLM as its 8-bit copy, not clipped to white.

`convert("RGB")` clips mode `I;16` (a 16-bit PNG) to 0-255 of 65535; the collator now reads it
at its bit depth (`data.schema.to_rgb`), as the diffusion data and the scorers do."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmalign.vlm.collate import PairCollator
from mmalign.vlm.tiny import tiny_llava


def test_a_16_bit_image_is_collated_as_its_8_bit_copy():
    _, processor = tiny_llava()
    ramp = np.tile(np.linspace(0, 65535, 32), (32, 1)).astype(np.uint16)
    deep = Image.fromarray(ramp)  # mode I;16
    assert deep.mode.startswith("I;16")
    shallow = Image.fromarray(np.rint(ramp / 257).astype(np.uint8)).convert("RGB")
    collate = PairCollator(processor, ("main",))

    def pixels(image):
        row = {"prompt": "What colour?", "chosen": "grey", "rejected": "white", "image": image}
        return collate([row]).vision["pixel_values"]

    assert np.allclose(pixels(deep).numpy(), pixels(shallow).numpy(), atol=1e-6)
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    assert not np.allclose(pixels(deep).numpy(), pixels(white).numpy(), atol=1e-3)
