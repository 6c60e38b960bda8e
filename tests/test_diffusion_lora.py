"""Trained LoRA weights load with the stock pipelines' `load_lora_weights` and change them."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config

from mmalign.diffusion import apply_lora, load_pipeline, load_tuned
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import train


def _sample(pipe) -> torch.Tensor:
    return pipe(
        ["a red circle on a blue background"], num_inference_steps=3, output_type="pt",
        generator=torch.Generator().manual_seed(0), guidance_scale=2.0,
    ).images  # fmt: skip


@pytest.mark.parametrize("family", ["toy-sd", "sdxl"])
def test_lora_loads_in_a_stock_pipeline_and_changes_its_output(tmp_path, family):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "toy-sd":
        model, cls = "toy:sd", StableDiffusionPipeline
    else:
        model, cls = str(save_tiny(tmp_path, "sdxl")), StableDiffusionXLPipeline
    out = tmp_path / "run"
    train(tiny_config(model, out, train={"max_steps": 3, "learning_rate": 1e-2}), DiffusionRecipe)
    path = load_pipeline(model).source
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    before = _sample(pipe)
    pipe.load_lora_weights(str(out))
    after = _sample(pipe)
    assert (after - before).abs().max() > 1e-3
    # mmalign's own loader reads the training output_dir and gives the same images.
    tuned = load_tuned(out)
    torch.testing.assert_close(_sample(tuned.pipe), after)


def test_lora_alpha_is_kept_in_the_saved_file(tmp_path):
    """A run with lora.alpha != lora.rank: the stock loader reproduces the trained pipeline
    (alpha / rank is folded into the saved weights; diffusers reads a plain file at scale 1)."""
    from diffusers import StableDiffusionPipeline

    made = []

    def make(cfg, accelerator):
        made.append(DiffusionRecipe(cfg, accelerator))
        return made[-1]

    out = tmp_path / "run"
    lora = {"rank": 4, "alpha": 16.0}
    train(tiny_config("toy:sd", out, lora=lora, train={"max_steps": 3, "learning_rate": 1e-2}),
          make)  # fmt: skip
    trained = made[0].diffusion.pipe.to("cpu")
    trained.set_progress_bar_config(disable=True)
    pipe = StableDiffusionPipeline.from_pretrained(load_pipeline("toy:sd").source)
    pipe.set_progress_bar_config(disable=True)
    base = _sample(pipe)
    pipe.load_lora_weights(str(out))
    ours = _sample(trained)
    assert (ours - base).abs().max() > 1e-3
    torch.testing.assert_close(_sample(pipe), ours, atol=1e-5, rtol=0)


def test_a_lora_for_another_model_is_refused(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(save_tiny(tmp_path, "sd"), out, train={"max_steps": 1}), DiffusionRecipe)
    other = load_pipeline(save_tiny(tmp_path, "sdxl"))
    with pytest.raises(ValueError, match="does not fit"):
        apply_lora(other, out)
