"""ReNoise / DDIM inversion on a zero-terminal-SNR schedule (`rescale_betas_zero_snr`, Lin et al.
2024, who pair it with trailing spacing): the top grid level 999 has alpha_bar = 0, where the
epsilon-parameterised inverse step is the identity (the inverted latent stays the one a level
below, and DDIM sampling back divides by sqrt(alpha_bar) = 0). That grid is refused with a
clear error instead of training SmPO pairs at t = 999 on a latent that still holds the image."""

from __future__ import annotations

import pytest
import torch

from mmalign.diffusion import DiffusionModel, tiny_sd_pipeline
from mmalign.diffusion.renoise import (
    ReNoiseSettings,
    inverse_scheduler,
    invert,
    invert_to_levels,
    to_epsilon,
)
from mmalign.diffusion.trajectory import make_trajectory


def schedule(spacing: str, zero_snr: bool) -> dict:
    """toy-sd's schedule (v-prediction), with the spacing and terminal SNR asked for; keys
    diffusers marks as defaults (`_use_default_values`) dropped so every value applies."""
    config = dict(tiny_sd_pipeline(0, "v_prediction").scheduler.config)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(timestep_spacing=spacing, rescale_betas_zero_snr=zero_snr, set_alpha_to_one=True)
    return config


def test_the_degenerate_top_level_is_real():
    """What the guard prevents, computed with the inverse step itself: at alpha_bar = 0 the
    ReNoise fixed point is the identity, so the latent 'at 999' equals the one at 799."""
    from diffusers import DDIMInverseScheduler

    config = schedule("trailing", zero_snr=True)
    inv = DDIMInverseScheduler.from_config(config, clip_sample=False, prediction_type="epsilon")
    inv.set_timesteps(5)
    assert float(inv.alphas_cumprod[int(inv.timesteps[-1])]) == 0.0
    ac = inv.alphas_cumprod

    def model(z, g, rows):  # a smooth stand-in for a v-prediction UNet
        return to_epsilon(0.2 * torch.tanh(z) + 0.05 * g / 1000, z, g, ac, "v_prediction")

    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = ReNoiseSettings(5, 3, None)
    below = invert_to_levels(model, x0, torch.full((2,), 3), inv, settings)
    top = invert_to_levels(model, x0, torch.full((2,), 4), inv, settings)
    assert torch.equal(top, below)


@pytest.mark.parametrize("native", [False, True])
def test_inversion_to_a_zero_snr_top_level_is_refused(native):
    with pytest.raises(ValueError, match="zero terminal SNR"):
        inverse_scheduler(schedule("trailing", zero_snr=True), 5, native=native)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        make_trajectory("renoise", {"steps": 5}, schedule("trailing", zero_snr=True), "sd")


def test_grids_that_never_reach_alpha_bar_zero_still_invert():
    # zero SNR on a leading grid stops at 800; trailing without zero SNR keeps alpha_bar > 0
    for spacing, zero_snr in (("leading", True), ("trailing", False)):
        traj = make_trajectory("renoise", {"steps": 5}, schedule(spacing, zero_snr), "sd")
        assert traj is not None
        assert float(traj.alphas_cumprod[traj.grid].min()) > 0


def test_the_tool_refuses_a_zero_snr_schedule():
    from diffusers import DDIMScheduler
    from PIL import Image

    pipe = tiny_sd_pipeline(0, "v_prediction")
    pipe.scheduler = DDIMScheduler.from_config(schedule("trailing", zero_snr=True))
    model = DiffusionModel(pipe, "sd", "")
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    with pytest.raises(ValueError, match="zero terminal SNR"):
        invert(model, [image], ["a red square"], steps=5, iterations=1, average_range=(0, 2))
