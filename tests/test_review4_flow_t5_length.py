"""`diffusion.max_sequence_length` beyond what the pipelines sample with is refused up front.

StableDiffusion3Pipeline and FluxPipeline refuse `max_sequence_length` > 512 in `__call__`
(`check_inputs`), but their `encode_prompt` does not: a recipe with 1024 T5 tokens encoded,
cached and trained at 1024, and then its validation, `mmalign sample` and `eval winrate` (which
sample at the run's recorded length) failed with diffusers' ValueError. A length of 0 fell back
to the family's default without a word.
"""

from __future__ import annotations

import pytest
from accelerate import Accelerator
from diffusion_helpers import tiny_config
from flow_helpers import save_tiny_flow, tiny_flow

from mmalign.config import ConfigError
from mmalign.diffusion.flow_recipe import diffusion_recipe


def _config(model, out, length: int):
    flow = {"resolution": 32, "max_sequence_length": length, "process": "flow"}
    return tiny_config(model, out, diffusion=flow)


def test_the_stock_pipelines_refuse_to_sample_beyond_512_t5_tokens():
    for family in ("sd3", "flux"):
        pipe = tiny_flow(family).pipe
        with pytest.raises(ValueError, match="cannot be greater than 512"):
            pipe(["a red circle"], num_inference_steps=1, height=32, width=32,
                 max_sequence_length=513)  # fmt: skip


@pytest.mark.parametrize("length", [513, 0])
def test_a_t5_length_the_pipeline_cannot_sample_with_is_a_config_error(tmp_path, length):
    cfg = _config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out", length)
    with pytest.raises(ConfigError, match=rf"diffusion.max_sequence_length: {length}.*1 to 512"):
        diffusion_recipe(cfg, Accelerator(cpu=True))
