"""Flow-model detection reads the pipeline (scheduler, transformer class), never its name."""

from __future__ import annotations

import pytest
from diffusion_helpers import save_tiny
from flow_helpers import save_tiny_flow

from mmalign.diffusion import load_pipeline
from mmalign.diffusion.flow_load import FlowModel, flow_family, load_flow_pipeline, process_of
from mmalign.diffusion.flow_tiny import tiny_flux_pipeline, tiny_sd3_pipeline


def test_family_from_the_pipeline_not_the_folder_name(tmp_path):
    flux = save_tiny_flow(tmp_path, "flux").rename(tmp_path / "stable-diffusion-xl-base-1.0")
    sd = save_tiny(tmp_path).rename(tmp_path / "FLUX.1-dev")
    assert process_of(flux) == "flow" and process_of(sd) == "ddpm"
    model = load_pipeline(flux)  # the DDPM loader hands a flow folder to the flow loader
    assert isinstance(model, FlowModel) and model.family == "flux" and model.guidance_embeds
    assert load_pipeline(sd).family == "sd"
    with pytest.raises(ValueError, match="does not use a flow-matching scheduler"):
        flow_family(load_pipeline(sd).pipe)


def test_sd3_round_trip_and_dropping_t5(tmp_path):
    assert flow_family(tiny_sd3_pipeline()) == "sd3"
    assert flow_family(tiny_flux_pipeline(guidance_embeds=False)) == "flux"
    path = save_tiny_flow(tmp_path, "sd3")
    full = load_flow_pipeline(path)
    assert full.has_t5 and len(full.text_encoders) == 3
    dropped = load_flow_pipeline(path, drop_t5=True)
    assert not dropped.has_t5 and len(dropped.text_encoders) == 2
    with pytest.raises(ValueError, match="FLUX needs its T5"):
        load_flow_pipeline(save_tiny_flow(tmp_path, "flux"), drop_t5=True)


def test_sd3_saved_without_t5_loads_and_encodes_at_the_clip_length(tmp_path):
    """An SD3 folder saved with no T5 (as toy-flow is) loads without naming the absent encoder,
    and its T5 zeros are as long as the CLIP tokenizer's length in training and sampling."""
    from mmalign.diffusion.flow_encode import FlowEncoder
    from mmalign.diffusion.flow_load import default_max_sequence, sampling_kwargs

    tiny_sd3_pipeline(0, t5=False).save_pretrained(tmp_path / "no-t5")
    model = load_flow_pipeline(tmp_path / "no-t5")
    assert model.family == "sd3" and not model.has_t5
    clip_length = model.pipe.tokenizer_max_length
    assert default_max_sequence(model.pipe, "sd3") == clip_length
    assert sampling_kwargs(model.pipe) == {"max_sequence_length": clip_length}
    embeds = FlowEncoder(model).text(["a red circle"])["prompt_embeds"]
    assert embeds.shape[1] == 2 * clip_length  # CLIP tokens, then as many T5 zeros
    with_t5 = tiny_sd3_pipeline(0)
    assert default_max_sequence(with_t5, "sd3") == 256 and sampling_kwargs(with_t5) == {}
    assert default_max_sequence(tiny_flux_pipeline(0), "flux") == 512
