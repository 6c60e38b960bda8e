"""A PPD adapter loaded into a base of other shapes (another cross-attention width, another
layer count) is refused before anything is loaded, naming the adapter file, the tensor, the
expected and found shapes and the base it was trained for; not torch's raw `size mismatch`."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mmalign.config import InputError
from mmalign.diffusion import ppd
from mmalign.diffusion.load import tiny_sd_pipeline, tiny_sdxl_pipeline

D = 8


def _saved(tmp_path, meta=None):
    pipe = tiny_sd_pipeline()  # cross-attention width 32
    ppd.add_user_branch(pipe.unet, D)
    return ppd.save_adapter(pipe.unet, tmp_path, meta)


def test_sd_adapter_into_sdxl_is_a_clear_error(tmp_path) -> None:
    path = _saved(tmp_path, {"base": "tiny-sd"})
    unet = tiny_sdxl_pipeline().unet  # cross-attention width 64
    with pytest.raises(InputError) as err:
        ppd.load_adapter(unet, tmp_path)
    msg = str(err.value)
    assert str(path) in msg
    assert "image_proj.proj.weight" in msg
    assert "(256, 8)" in msg and "(128, 8)" in msg  # expected 4 x 64 rows, found 4 x 32
    assert "trained for base tiny-sd" in msg
    assert "size mismatch" not in msg
    assert not ppd.has_user_branch(unet)  # nothing half-loaded


def test_another_cross_attention_width_names_the_layer_tensor(tmp_path) -> None:
    from diffusers import UNet2DConditionModel

    path = _saved(tmp_path)
    (tmp_path / "mmalign_run.json").write_text(json.dumps({"base": "toy/models/toy-sd"}))
    base = tiny_sd_pipeline().unet
    unet = UNet2DConditionModel.from_config(base.config, cross_attention_dim=48)
    state = ppd.init_state_dict(base, D)  # the projection of a width-48 base, layers of 32
    state["image_proj"] = ppd.init_state_dict(unet, D)["image_proj"]
    flat = {f"{h}.{k}": v.contiguous() for h, part in state.items() for k, v in part.items()}
    from safetensors.torch import save_file

    save_file(flat, str(path))
    with pytest.raises(InputError) as err:
        ppd.load_adapter(unet, path)
    msg = str(err.value)
    assert str(path) in msg
    assert re.search(r"ip_adapter\.1\.to_k_ip\.weight: expected \(32, 48\), found \(32, 32\)", msg)
    assert "trained for base toy/models/toy-sd" in msg  # from the run folder's record


def test_another_layer_count_is_named(tmp_path) -> None:
    path = _saved(tmp_path)
    from safetensors.torch import load_file, save_file

    flat = load_file(str(path))
    flat["ip_adapter.99.to_k_ip.weight"] = torch.zeros(32, 32)
    save_file(flat, str(path))
    unet = tiny_sd_pipeline().unet
    with pytest.raises(InputError, match=r"ip_adapter\.99\.to_k_ip\.weight.*not in this base"):
        ppd.load_adapter(unet, path)
    with pytest.raises(InputError, match="base not recorded"):
        ppd.load_adapter(unet, path)


def test_a_matching_adapter_still_loads(tmp_path) -> None:
    _saved(tmp_path, {"base": "tiny-sd"})
    unet = tiny_sd_pipeline().unet
    assert ppd.load_adapter(unet, tmp_path)["base"] == "tiny-sd"
    assert ppd.has_user_branch(unet) and ppd.embed_width(unet) == D
