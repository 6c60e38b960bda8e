"""With the network down (not offline mode), a recipe's model that cannot be downloaded is named
by its recipe key, `model.name_or_path`.

The loaders wrapped their hub calls with the key `model`, so `mmalign train` answered "model:
org/x could not be downloaded ..., or set model to a local folder": a key no recipe has. Offline
mode was already right (train/sources.py checks the cache first, with the recipe's keys).

The network failure is simulated where huggingface_hub meets it: each download raises the
`LocalEntryNotFoundError` it raises when it cannot connect, caused by httpx's `ConnectError`.
"""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import errors as hub_errors

from mmalign.config import InputError

MODEL = "org/not-cached"


def _no_network(*args, **kwargs):
    request = httpx.Request("HEAD", f"https://huggingface.co/{MODEL}/resolve/main/config.json")
    try:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)
    except httpx.ConnectError as err:
        raise hub_errors.LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find the "
            "requested files in the local cache. Please check your connection and try again or "
            "make sure your Internet connection is on."
        ) from err


@pytest.fixture
def network_down(tmp_path, monkeypatch):
    """An empty hub cache, online mode, and every download failing to connect."""
    import diffusers
    import huggingface_hub
    import transformers

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_network)
    for cls in (diffusers.DiffusionPipeline, diffusers.AutoencoderKL,
                transformers.AutoModelForImageTextToText, transformers.AutoProcessor):  # fmt: skip
        monkeypatch.setattr(cls, "from_pretrained", _no_network)


def _expect_model_key(err: InputError) -> None:
    message = str(err)
    assert message.startswith(f"model.name_or_path: {MODEL} could not be downloaded"), message
    assert message.endswith("or set model.name_or_path to a local folder"), message


def test_a_diffusion_recipe_names_model_name_or_path(network_down, tmp_path):
    from accelerate import Accelerator
    from diffusion_helpers import tiny_config

    from mmalign.diffusion.flow_recipe import diffusion_recipe

    cfg = tiny_config(MODEL, tmp_path / "out")
    with pytest.raises(InputError) as info:
        diffusion_recipe(cfg, Accelerator(cpu=True))
    _expect_model_key(info.value)


def test_a_vlm_recipe_names_model_name_or_path(network_down, tmp_path):
    from accelerate import Accelerator
    from test_vlm_train import vlm_config

    from mmalign.vlm.recipe import VLMRecipe

    cfg = vlm_config(tmp_path / "out", model={"name_or_path": MODEL, "kind": "vlm"})
    with pytest.raises(InputError) as info:
        VLMRecipe(cfg, Accelerator(cpu=True))
    _expect_model_key(info.value)


def test_the_loaders_keep_naming_model_for_a_command_line_model(network_down):
    from mmalign.diffusion.load import load_pipeline

    with pytest.raises(InputError, match=f"^model: {MODEL} could not be downloaded"):
        load_pipeline(MODEL)


def test_vlm_data_names_data_path(network_down, tmp_path, monkeypatch):
    """The VLM recipe's data that cannot be downloaded is named `data.path` (was `data`, the
    name `mmalign data diagnose DATA` still uses)."""
    import datasets
    from test_vlm_train import vlm_config

    from mmalign.vlm.data import open_vlm_pairs
    from mmalign.vlm.recipe import open_rows

    monkeypatch.setattr(datasets, "load_dataset", _no_network)
    cfg = vlm_config(tmp_path / "out", data={"path": "org/not-cached-data", "toy": None})
    with pytest.raises(InputError) as info:
        open_rows(cfg)
    assert str(info.value).startswith("data.path: org/not-cached-data"), str(info.value)
    with pytest.raises(InputError) as info:
        open_vlm_pairs("org/not-cached-data")
    assert str(info.value).startswith("data: org/not-cached-data"), str(info.value)
