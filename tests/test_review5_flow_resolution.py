"""An SD3 transformer's position embedding covers at most `pos_embed_max_size` latent patches a
side: a larger training or sampling resolution is refused before any work, naming the key,
the value and the largest side the model takes. FLUX (RoPE) has no such bound."""

from __future__ import annotations

import pytest
from diffusion_helpers import tiny_config
from flow_helpers import MAX_SEQUENCE, save_tiny_flow, tiny_flow

from mmalign.config import ConfigError, InputError
from mmalign.diffusion.flow_load import max_resolution
from mmalign.diffusion.sample import sampling_resolution

TINY_SD3_MAX = 16 * 2 * 2  # pos_embed_max_size x patch_size x the VAE factor


def test_the_largest_side_each_family_takes():
    assert max_resolution(tiny_flow("sd3").pipe) == TINY_SD3_MAX
    assert tiny_flow("sd3").max_resolution == TINY_SD3_MAX
    assert max_resolution(tiny_flow("flux").pipe) is None  # RoPE: no table to outgrow


def test_training_beyond_the_position_embedding_is_a_config_error(tmp_path, capsys):
    from accelerate import Accelerator

    from mmalign.diffusion.flow_recipe import diffusion_recipe

    model = save_tiny_flow(tmp_path, "sd3")
    flow = {"resolution": 128, "max_sequence_length": MAX_SEQUENCE, "process": "flow"}
    cfg = tiny_config(model, tmp_path / "out", diffusion=flow)
    with pytest.raises(ConfigError, match=r"diffusion.resolution: 128 .* at most 64 px") as err:
        diffusion_recipe(cfg, Accelerator(cpu=True))
    assert "pos_embed_max_size 16" in str(err.value)
    assert "building toy dataset" not in capsys.readouterr().out  # before any data is built


def test_sampling_beyond_it_names_the_option():
    model = tiny_flow("sd3")
    assert sampling_resolution(model, TINY_SD3_MAX, None) == TINY_SD3_MAX
    with pytest.raises(InputError, match=r"--resolution 128 is larger .* at most 64 px"):
        sampling_resolution(model, 128, None)
    with pytest.raises(InputError, match=r"the training run's resolution 128 is .* at most 64"):
        sampling_resolution(model, None, {"resolution": 128})
    assert sampling_resolution(tiny_flow("flux"), 128, None) == 128


def test_mmalign_sample_on_toy_flow(tmp_path, capsys):
    """toy-flow: pos_embed_max_size 8, so 32 px at most (was a diffusers ValueError from the
    first denoising step)."""
    from mmalign.cli import main

    out = tmp_path / "grid.png"
    argv = ["sample", "toy:flow", "--prompt", "a red circle", "--steps", "1", "--out", str(out)]
    assert main([*argv, "--resolution", "64"]) == 2
    err = capsys.readouterr().err
    assert "--resolution 64" in err and "at most 32 px" in err and not out.exists()
