"""Validation encodes prompts outside the training autocast, as training does.

`reporting.validate` samples the validation grid under `accelerator.autocast()`, which under
`train.mixed_precision: fp16` on a GPU is `torch.autocast("cuda", dtype=torch.float16)`: the
pipeline's `encode_prompt` then ran T5 with every matmul in float16, its feed-forward output
`wo` too, which transformers keeps in float32 (`_keep_in_fp32_modules`) because T5's
activations overflow float16. Inf there made the prompt embeddings NaN and the SD3 / FLUX
validation images black, while training itself (the recipes' `to_device`, the pre-encoding
cache) encodes outside autocast. Now the text encoders run in their own dtype outside autocast
while sampling (`sample.text_encoders_in_own_precision`); the denoiser still runs under it.

Shown on the CPU, whose autocast takes float16 as CUDA's does (accelerate's CPU autocast is
bfloat16 only, so the tests enter torch's directly, as accelerate does on a GPU). T5-XXL's
large activations are stood in for by the tiny T5's `wo` scaled so that its output passes
float16's 65504.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from diffusion_helpers import tiny_config
from flow_helpers import MAX_SEQUENCE, save_tiny_flow

from mmalign.diffusion.flow_recipe import diffusion_recipe
from mmalign.diffusion.flow_tiny import tiny_sd3_pipeline
from mmalign.diffusion.sample import text_encoders_in_own_precision

FP16_AUTOCAST = {"device_type": "cpu", "dtype": torch.float16}


def _record(module: torch.nn.Module, seen: list[tuple[bool, torch.dtype]]) -> None:
    """Append (autocast on?, output dtype) each time `module` runs."""

    def hook(_m, _inputs, output):
        out = output if isinstance(output, torch.Tensor) else output[0]
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))

    module.register_forward_hook(hook)


def _t5_wo(t5) -> torch.nn.Module:
    return t5.encoder.block[0].layer[-1].DenseReluDense.wo


def test_every_text_encoder_runs_outside_autocast_and_the_denoiser_inside():
    pipe = tiny_sd3_pipeline(0)
    pipe.set_progress_bar_config(disable=True)
    encoders: dict[str, list] = {"clip_l": [], "clip_g": [], "t5": []}
    _record(pipe.text_encoder.text_model.encoder.layers[0].mlp.fc1, encoders["clip_l"])
    _record(pipe.text_encoder_2.text_model.encoder.layers[0].mlp.fc1, encoders["clip_g"])
    _record(_t5_wo(pipe.text_encoder_3), encoders["t5"])
    denoiser: list = []
    _record(pipe.transformer.proj_out, denoiser)
    call = {"num_inference_steps": 1, "height": 32, "width": 32, "output_type": "pt",
            "max_sequence_length": MAX_SEQUENCE}  # fmt: skip
    with torch.autocast(**FP16_AUTOCAST):
        pipe(["a red circle"], **call)
    # without the block: fp16 autocast reaches T5's float32-kept `wo` (what validation did)
    assert encoders["t5"] and all(seen == (True, torch.float16) for seen in encoders["t5"])
    for seen in (*encoders.values(), denoiser):
        seen.clear()
    with torch.autocast(**FP16_AUTOCAST), text_encoders_in_own_precision(pipe):
        pipe(["a red circle"], **call)
    for name, seen in encoders.items():
        assert seen and all(s == (False, torch.float32) for s in seen), (name, seen)
    assert denoiser and all(s == (True, torch.float16) for s in denoiser)
    # each encoder is its class's own again
    for module in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3):
        assert "forward" not in module.__dict__


def test_the_block_nests_and_puts_back_a_forward_set_before():
    pipe = tiny_sd3_pipeline(0, t5=False)
    hooked = pipe.text_encoder.forward
    pipe.text_encoder.forward = hooked  # as an offloading hook sets one on the instance
    with text_encoders_in_own_precision(pipe):
        inner = pipe.text_encoder.forward
        with text_encoders_in_own_precision(pipe):
            assert pipe.text_encoder.forward is inner
        assert pipe.text_encoder.forward is inner and inner is not hooked
    assert pipe.text_encoder.forward is hooked
    assert "forward" not in pipe.text_encoder_2.__dict__


def test_flow_validation_under_fp16_autocast_encodes_finite_t5_embeddings(tmp_path):
    flow = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow"}
    validation = {"enabled": True, "prompts": ["a red circle"], "steps": 1}
    cfg = tiny_config(save_tiny_flow(tmp_path), tmp_path / "out", diffusion=flow,
                      validation=validation)  # fmt: skip
    recipe = diffusion_recipe(cfg, Accelerator(cpu=True))
    t5 = recipe.diffusion.pipe.text_encoder_3
    with torch.no_grad():  # past float16's range in fp16, well inside float32's
        _t5_wo(t5).weight.mul_(40000.0)
    wo: list = []
    _record(_t5_wo(t5), wo)
    finite: list[bool] = []
    t5.register_forward_hook(lambda _m, _i, out: finite.append(bool(out[0].isfinite().all())))
    with torch.autocast(**FP16_AUTOCAST):  # what reporting.validate's autocast is on a GPU
        grid = recipe.validate(0)
    assert grid is not None
    assert wo and all(s == (False, torch.float32) for s in wo), wo
    assert finite and all(finite)  # fp16 autocast: inf in `wo`, NaN embeddings
    assert "forward" not in t5.__dict__
