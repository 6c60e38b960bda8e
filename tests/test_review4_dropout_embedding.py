"""`diffusion.caption_dropout_embedding`: what a pair whose caption is dropped conditions on.

`empty` (default) is the encoded empty prompt "", as Diffusion-DPO's code and diffusers'
scripts train it; `zeros` is SDXL's own unconditional embedding: StableDiffusionXLPipeline
(`force_zeros_for_empty_prompt`) samples its unconditional branch with zero prompt embeds and
zero pooled embeds, so `zeros` trains the branch classifier-free guidance uses.
"""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config
from PIL import Image

from mmalign.config import ConfigError
from mmalign.data.schema import write_pairs


def _recipe(tmp_path, family: str, **diffusion):
    from accelerate import Accelerator

    from mmalign.diffusion.recipe import DiffusionRecipe

    pairs = tmp_path / "pairs"
    if not pairs.is_dir():
        rows = [
            {"prompt": f"a {c} square", "chosen": Image.new("RGB", (32, 32), c),
             "rejected": Image.new("RGB", (32, 32), "black")}
            for c in ("red", "blue")
        ]  # fmt: skip
        write_pairs(rows, pairs, "image")
    cfg = tiny_config(
        save_tiny(tmp_path, family), tmp_path / "out", data={"path": str(pairs), "toy": None},
        diffusion=diffusion,
    )  # fmt: skip
    return DiffusionRecipe(cfg, Accelerator(cpu=True))


def _conditioning(recipe) -> dict[str, torch.Tensor]:
    """The conditioning of a batch of two pairs, the first one's caption dropped."""
    batch = recipe.collate([recipe.dataset[i] for i in range(2)])
    batch = recipe.to_device(batch, [0, 1], torch.device("cpu"))
    cond = recipe.scorer._conditioning(batch, torch.tensor([True, False]))
    for key, value in cond.items():  # the kept caption is untouched
        torch.testing.assert_close(value[1], batch[key][1])
    return cond


def test_the_default_is_the_encoded_empty_prompt(tmp_path):
    recipe = _recipe(tmp_path, "sdxl")
    assert recipe.cfg.diffusion.caption_dropout_embedding == "empty"
    empty = recipe.encoder.text([""])
    cond = _conditioning(recipe)
    assert set(cond) == {"prompt_embeds", "pooled"}
    for key, value in cond.items():
        torch.testing.assert_close(value[0], empty[key][0])
        assert value[0].abs().sum() > 0


@pytest.mark.parametrize("precompute", [False, True])
def test_zeros_drops_sdxl_captions_to_zero_prompt_and_pooled_embeds(tmp_path, precompute):
    recipe = _recipe(tmp_path, "sdxl", caption_dropout_embedding="zeros", precompute=precompute,
                     cache_dir=str(tmp_path / "cache"))  # fmt: skip
    cond = _conditioning(recipe)
    assert set(cond) == {"prompt_embeds", "pooled"}
    for value in cond.values():
        assert value[0].shape == value[1].shape
        assert torch.count_nonzero(value[0]) == 0
        assert value[1].abs().sum() > 0


def test_zeros_is_refused_for_sd15_whose_pipeline_uses_the_empty_prompt(tmp_path):
    with pytest.raises(ConfigError, match=r"diffusion\.caption_dropout_embedding: 'zeros'"):
        _recipe(tmp_path, "sd", caption_dropout_embedding="zeros")


def test_a_mistyped_value_gets_a_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"caption_dropout_embedding.*did you mean 'zeros'"):
        tiny_config("toy:sd", tmp_path, diffusion={"caption_dropout_embedding": "zero"})


@pytest.mark.parametrize("family", ["sd", "sd3", "flux"])
def test_zeros_is_refused_for_every_family_but_sdxl(family):
    from mmalign.diffusion.recipe_base import check_dropout_embedding

    check_dropout_embedding("empty", family)
    check_dropout_embedding("zeros", "sdxl")
    with pytest.raises(ConfigError, match=f"pipeline \\({family}\\)"):
        check_dropout_embedding("zeros", family)
