"""A full fine-tune of a half-precision model (`model.dtype: bfloat16`, `lora: null`) trains
float32 copies of its weights, as LoRA's adapters already did.

The trainable weights stayed in bf16, so AdamW's steps (about lr per weight) below half a bf16
ulp of a weight (2^-9 of it) were rounded away: at lr 1e-6 a tiny SD UNet kept nearly every
weight as it started. Standard practice (diffusers' `cast_training_params`, accelerate's mixed
precision): the trained weights in float32, frozen ones (the reference copy, the encoders) in
the model's dtype, the compute under autocast. A full fine-tune of a half-precision model
without train.mixed_precision (no autocast: float32 weights would meet bf16 activations) is
refused when the recipe loads, naming the setting to give.
"""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config
from safetensors.torch import load_file

from mmalign.config import ConfigError, from_dict, to_dict
from mmalign.train import Config
from mmalign.train.loop import train


def _config(model, out, dtype: str, **sections) -> Config:
    """`tiny_config` with `model.dtype` (its `model` is the model's path)."""
    raw = to_dict(tiny_config(model, out, **sections))
    raw["model"]["dtype"] = dtype
    return from_dict(Config, raw)


@pytest.fixture
def bf16_accelerate():
    """accelerate keeps one process-wide state: a bf16 run needs it fresh, and the tests after
    this one get the state they had."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    saved = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState,
                                                         GradientState)]  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    for cls, state in saved:
        cls._shared_state.update(state)


def test_a_bf16_full_fine_tune_keeps_its_small_updates(tmp_path, bf16_accelerate):
    from diffusers import UNet2DConditionModel

    from mmalign.diffusion.recipe import DiffusionRecipe

    model, out = save_tiny(tmp_path / "models"), tmp_path / "run"
    cfg = _config(
        model, out, "bfloat16", lora=None,
        train={"max_steps": 1, "learning_rate": 1e-6, "mixed_precision": "bf16",
               "weight_decay": 0.0},
        validation={"enabled": True, "prompts": ["a red circle"], "steps": 2},
    )  # fmt: skip
    train(cfg, DiffusionRecipe)
    trained = load_file(str(out / "checkpoints" / "checkpoint-1" / "trainable.safetensors"))
    start = {
        n: p.detach().to(torch.bfloat16).float()  # the weights it started from
        for n, p in UNet2DConditionModel.from_pretrained(model / "unet").named_parameters()
    }
    moved = sum(int((t != start[n]).sum()) for n, t in trained.items())
    total = sum(t.numel() for t in trained.values())
    assert moved / total > 0.9, f"{moved} of {total} weights moved"
    assert trained and all(t.dtype == torch.float32 for t in trained.values())
    # the validation grid was sampled with the float32 UNet and the bf16 text encoder
    assert len(list((out / "validation").glob("step-*.png"))) == 1


@pytest.mark.parametrize(("dtype", "precision"), [("bfloat16", "bf16"), ("float16", "fp16")])
def test_a_half_precision_full_fine_tune_needs_mixed_precision(tmp_path, dtype, precision):
    model, out = tmp_path / "model", tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"^train\.mixed_precision: .*{precision}"):
        _config(model, out, dtype, lora=None)
    _config(model, out, dtype, lora=None, train={"mixed_precision": precision})
    _config(model, out, dtype)  # LoRA: its adapters are float32 already
    _config(model, out, "float32", lora=None)  # float32 weights: nothing to round
