"""A pipeline whose prediction type the scorer cannot train is refused before any encoding.

The scorer trains epsilon- and v-prediction models (Diffusion-DPO's targets); a scheduler with
`prediction_type: sample` was refused only when the scorer was built, after
`diffusion.precompute` had encoded the whole dataset (hours of VAE and text-encoder passes on
Pick-a-Pic), and with a bare ValueError instead of a config error naming the key.
"""

from __future__ import annotations

import pytest
from diffusion_helpers import tiny_config

from mmalign.config import ConfigError
from mmalign.diffusion import recipe_base, tiny_sd_pipeline
from mmalign.diffusion.recipe import DiffusionRecipe


def test_a_sample_prediction_model_is_refused_before_pre_encoding(tmp_path, monkeypatch):
    from accelerate import Accelerator

    path = tmp_path / "tiny-sample"
    tiny_sd_pipeline(prediction_type="sample").save_pretrained(path)

    def precompute(*args, **kwargs):
        raise AssertionError("the dataset was pre-encoded before the prediction type was checked")

    monkeypatch.setattr(recipe_base, "precompute", precompute)
    diffusion = {"precompute": True, "cache_dir": str(tmp_path / "cache")}
    cfg = tiny_config(path, tmp_path / "run", diffusion=diffusion)
    with pytest.raises(ConfigError, match=r"model\.name_or_path: .* prediction type 'sample'"):
        DiffusionRecipe(cfg, Accelerator(cpu=True))
