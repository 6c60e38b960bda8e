"""Flow sigma settings outside the ranges their formulas hold in are refused at config time."""

import math

import pytest

from mmalign.train.config import DiffusionConfig


@pytest.mark.parametrize("scale", [-1.5, 2 / (math.pi - 2) + 0.01, 8.0])
def test_a_mode_scale_outside_the_sd3_papers_range_is_refused(scale):
    with pytest.raises(ValueError, match=r"diffusion\.mode_scale must be in"):
        DiffusionConfig(sigma_sampling="mode", mode_scale=scale)


@pytest.mark.parametrize("scale", [-1.0, 0.0, 1.29, 2 / (math.pi - 2)])
def test_a_mode_scale_in_range_is_accepted(scale):
    DiffusionConfig(sigma_sampling="mode", mode_scale=scale)


@pytest.mark.parametrize("std", [0.0, -1.0])
def test_a_logit_std_that_is_not_positive_is_refused(std):
    with pytest.raises(ValueError, match=r"diffusion\.logit_std must be > 0"):
        DiffusionConfig(logit_std=std)
