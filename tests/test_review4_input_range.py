"""Review 4: a float image tensor in [-1, 1] is never read as [0, 1].

`as_image_batch` refused a float batch only when its minimum was below -0.5: a [-1, 1] batch
(a VAE decode, a diffusion pipeline's raw output) of bright images, whose darkest value is at
least -0.5, passed as [0, 1], its negatives clamped to black and its other values read as twice
too dark, and was scored without a word. Float images are now taken in [0, 1] only (up to half
an 8-bit step of rounding, clamped); any other value is refused naming the range it suggests.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.rewards import as_image_batch, get_scorer


def _bright_minus_one_to_one() -> torch.Tensor:
    """A bright image as a VAE decodes it: values in [-0.4, 1]."""
    torch.manual_seed(0)
    return torch.rand(2, 3, 8, 8) * 1.4 - 0.4


def test_a_bright_minus_one_to_one_batch_is_refused():
    x = _bright_minus_one_to_one()
    assert float(x.min()) >= -0.5  # what passed before
    with pytest.raises(ValueError, match=r"\[-1, 1\].*\(x \+ 1\) / 2"):
        as_image_batch(x)
    torch.testing.assert_close(as_image_batch((x + 1) / 2), (x + 1) / 2)


def test_a_scorer_refuses_it_too():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        get_scorer("toy:fidelity").score(_bright_minus_one_to_one(), ["a red circle"] * 2)


def test_anything_outside_zero_one_is_refused_with_the_range_it_suggests():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="pass uint8 for 0-255"):
        as_image_batch(x * 255)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        as_image_batch(x * 1.5)  # above 1: not [-1, 1], not 0-255 either
    with pytest.raises(ValueError, match=r"clamp\(0, 1\)"):
        as_image_batch(x * 1.02 - 0.01)  # a resize's overshoot: the caller clamps it
    with pytest.raises(ValueError, match="NaN"):
        as_image_batch(torch.full((1, 3, 4, 4), float("nan")))


def test_zero_one_batches_pass_unchanged():
    x = torch.rand(2, 3, 8, 8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    assert torch.equal(as_image_batch(x), x)
    # float rounding (half an 8-bit step at most) is clamped, not refused
    nudged = x.clone()
    nudged[0, 0, 0, 0], nudged[0, 0, 0, 1] = -1e-3, 1 + 1e-3
    assert torch.equal(as_image_batch(nudged), x)
    u8 = (x * 255).to(torch.uint8)
    assert torch.equal(as_image_batch(u8), u8.float() / 255)
    assert as_image_batch(torch.empty(0, 3, 8, 8)).shape == (0, 3, 8, 8)
