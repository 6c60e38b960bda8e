"""Float images outside [0, 1] by a whole range (0-255 pixels, or [-1, 1] as a VAE decodes) are
an error naming the range, not clamped into white or black images and scored without a word;
float rounding (half an 8-bit step) is still clamped."""

from __future__ import annotations

import pytest
import torch

from mmalign.rewards import as_image_batch, get_scorer


def test_whole_other_ranges_are_refused() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"pass uint8 for 0-255"):
        as_image_batch(x * 255)
    with pytest.raises(ValueError, match=r"map \[-1, 1\] with \(x \+ 1\) / 2"):
        as_image_batch(x * 2 - 1)
    # a resize's overshoot is the caller's to clamp (review 4: below 0 may be [-1, 1]); float
    # rounding of half an 8-bit step is still clamped
    with pytest.raises(ValueError, match=r"clamp\(0, 1\)"):
        as_image_batch(x * 1.02 - 0.01)
    over = as_image_batch(x * (1 + 1e-3) - 5e-4)
    assert float(over.min()) >= 0 and float(over.max()) <= 1
    assert torch.equal(as_image_batch((x * 255).to(torch.uint8)), (x * 255).to(torch.uint8) / 255)


def test_a_scorer_refuses_them_too() -> None:
    scorer = get_scorer("toy:fidelity")
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        scorer.score(torch.rand(2, 3, 32, 32) * 255, ["a red circle", "a blue square"])
