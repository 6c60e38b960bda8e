"""Loading SD1.5 / SDXL pipelines: tiny random models round-tripped through save_pretrained."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import save_tiny

from mmalign.diffusion import load_pipeline


@pytest.mark.parametrize("family", ["sd", "sdxl"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_tiny_pipelines_round_trip(tmp_path, family, prediction_type):
    path = save_tiny(tmp_path, family, prediction_type)
    model = load_pipeline(path)
    assert model.family == family
    assert model.prediction_type == prediction_type
    assert model.default_resolution == 32
    images = model.pipe(
        ["a red circle on a blue background"], num_inference_steps=2, output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images  # fmt: skip
    assert images.shape == (1, 3, 32, 32)


def test_half_precision_keeps_the_vae_in_float32(tmp_path):
    model = load_pipeline(save_tiny(tmp_path), dtype="bfloat16")
    assert model.unet.dtype == torch.bfloat16
    assert model.pipe.text_encoder.dtype == torch.bfloat16
    assert model.pipe.vae.dtype == torch.float32


def test_toy_sd_loads_by_name():
    model = load_pipeline("toy:sd")
    assert model.family == "sd" and model.prediction_type == "v_prediction"


def test_a_folder_that_is_not_a_pipeline_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        load_pipeline(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline(tmp_path, dtype="fp8")
