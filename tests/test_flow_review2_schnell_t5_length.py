"""FLUX.1-schnell (no guidance embedding) encodes and samples with 256 T5 tokens, not 512.

Black Forest Labs' reference loads T5 with `max_length=256 if name == "flux-schnell" else
512`, and diffusers' FLUX page says schnell's `max_sequence_length` "cannot be more than 256".
mmalign used FluxPipeline's default 512 for both: a schnell run trained (and validated, and
`mmalign sample` / `eval winrate` drew its base) on 256 more T5 tokens than the model saw in
training, each one attended to by every image token. FLUX.1-dev keeps 512.
"""

from __future__ import annotations

import pytest
import torch
from flow_helpers import tiny_flow

from mmalign.config import ConfigError
from mmalign.diffusion.flow_encode import FlowEncoder
from mmalign.diffusion.flow_load import default_max_sequence, sampling_kwargs
from mmalign.diffusion.flow_recipe import check_schnell_sequence


def test_schnell_defaults_to_256_t5_tokens_and_dev_to_512():
    schnell = tiny_flow("flux", guidance_embeds=False)
    dev = tiny_flow("flux")
    assert default_max_sequence(schnell.pipe, "flux") == 256
    assert default_max_sequence(dev.pipe, "flux") == 512
    # training's encoding (nothing named) and a base pipeline's sampling agree on 256
    text = FlowEncoder(schnell).text(["a red circle"])
    assert text["prompt_embeds"].shape[1] == 256
    assert sampling_kwargs(schnell.pipe) == {"max_sequence_length": 256}
    assert sampling_kwargs(dev.pipe) == {}  # FluxPipeline's own 512
    # the pipeline then encodes exactly what training conditioned on
    with torch.no_grad():
        embeds, _, _ = schnell.pipe.encode_prompt(["a red circle"], None,
                                                  **sampling_kwargs(schnell.pipe))  # fmt: skip
    torch.testing.assert_close(embeds.half(), text["prompt_embeds"])
    # a tuned run's recorded length still wins
    schnell.pipe.mmalign_max_sequence_length = 64
    assert sampling_kwargs(schnell.pipe) == {"max_sequence_length": 64}


def test_more_than_256_t5_tokens_on_schnell_is_a_config_error():
    schnell, dev = tiny_flow("flux", guidance_embeds=False), tiny_flow("flux")
    with pytest.raises(ConfigError, match="max_sequence_length: 512 is more T5 tokens"):
        check_schnell_sequence(schnell.pipe, "flux", 512)
    for length in (None, 256, 64):
        check_schnell_sequence(schnell.pipe, "flux", length)
    check_schnell_sequence(dev.pipe, "flux", 512)  # FLUX.1-dev reads 512
