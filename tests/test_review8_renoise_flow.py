"""Review 8: `renoise.invert` (ReNoise inversion) given a flow-matching model from Python said
"mmalign trains StableDiffusionPipeline and StableDiffusionXLPipeline models; this one is a
FlowModel" (mmalign trains flow models too: it is inversion that does not take them), while
`mmalign invert` refused it clearly. Both now say it with one message (`renoise.flow_refused`)."""

from __future__ import annotations

import pytest
from PIL import Image

from mmalign.diffusion import renoise


@pytest.fixture(scope="module")
def toy_flow():
    from mmalign.diffusion.flow_load import load_flow_pipeline
    from mmalign.toy.paths import model_path

    return load_flow_pipeline(str(model_path("flow")))


@pytest.mark.parametrize("loaded", ["FlowModel", "pipeline"])
def test_invert_refuses_a_flow_model_clearly(toy_flow, loaded: str) -> None:
    pipe = toy_flow if loaded == "FlowModel" else toy_flow.pipe  # as loaded, or diffusers' own
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    with pytest.raises(ValueError) as err:
        renoise.invert(pipe, [image], ["a red circle"], steps=2, iterations=1,
                       average_range=None)  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"renoise.invert: this {type(pipe).__name__}")
    assert "is a flow-matching (SD3 / FLUX) pipeline" in message
    assert "DDIM and ReNoise inversion of SD1.5 / SDXL (UNet) models" in message
    assert "mmalign trains" not in message
    with pytest.raises(ValueError, match=r"^renoise\.encode_images: .* flow-matching"):
        renoise.encode_images(pipe, [image])


def test_the_command_says_it_with_the_same_rule() -> None:
    from mmalign.diffusion import invert_cli

    assert not hasattr(invert_cli, "flow_refused")  # one copy of the rule: renoise's
    assert renoise.flow_refused("toy:flow", "mmalign invert").startswith(
        "mmalign invert: toy:flow is a flow-matching (SD3 / FLUX) pipeline; `mmalign invert` is "
    )
