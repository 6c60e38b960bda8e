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
